"""Checks across the whole file: parts that are each valid alone but together mean something else.

- **Databases**: the two sites of a service name two different databases (one server named twice would
  be "promoted" onto itself), and only sites of the service.
- **Tokens**: one token (its hash) has one name and one role; the same hash twice makes the recorded
  actor and the granted role depend on list order.
- **Probes**: every site has at least one probe; a site without one stays UNKNOWN forever, so it can
  neither be failed over from nor to, and nothing says so.
- **Voters**: peers are distinct processes (a URL listed twice, or our own address, would count one
  voter twice towards a majority), each link has its own key, an engine peer runs in a site of every
  service (as this instance must), and an executor is named once.

:func:`problems` returns every finding as ``(path, message)``; the loader reports them with their lines.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

from engine.config.model import EngineConfig

Finding = tuple[str, str]


def problems(config: EngineConfig) -> list[Finding]:
    """Every cross-file problem of ``config``, in file order."""
    return [*_voters(config), *_tokens(config), *_services(config)]


def _voters(config: EngineConfig) -> Iterator[Finding]:
    urls: dict[tuple[str, int] | None, int] = {}
    keys: dict[str, int] = {}
    own = _address(f"http://{config.instance.listen}")
    for index, peer in enumerate(config.peers):
        where = f"peers[{index}]"
        address = _address(peer.url)
        if address is not None and address in urls:
            yield f"{where}.url", (f"the same address as peers[{urls[address]}]: one process would count as two "
                                   "voters towards a majority")
        urls.setdefault(address, index)
        if own is not None and address == own and not own[0].startswith("0.0.0.0"):
            yield f"{where}.url", "this instance's own listen address: it would vote twice"
        if peer.key is not None:
            secret = peer.key.get_secret_value()
            if secret in keys:
                yield f"{where}.key", (f"the same key as peers[{keys[secret]}]: each link needs its own key, or "
                                       "either peer could sign as the other")
            keys.setdefault(secret, index)
        if peer.role == "engine":
            for name, svc in config.services.items():
                if peer.site not in svc.sites:
                    yield f"{where}.site", (f"engine {peer.id!r} runs in '{peer.site}', not a site of service "
                                            f"'{name}' ({', '.join(sorted(svc.sites))})")
    for name, svc in config.services.items():
        seen: set[str] = set()
        for index, executor in enumerate(svc.policy.executors):
            if executor in seen:
                yield f"services.{name}.policy.executors[{index}]", f"'{executor}' is listed twice"
            seen.add(executor)


def _address(url: str) -> tuple[str, int] | None:
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    return (parts.hostname or "").lower(), port


def _tokens(config: EngineConfig) -> Iterator[Finding]:
    seen: dict[str, int] = {}
    for index, token in enumerate(config.api.tokens):
        first = seen.get(token.sha256)
        if first is not None:
            other = config.api.tokens[first]
            yield f"api.tokens[{index}].sha256", (f"the same token as tokens[{first}] ({other.name}, {other.role}): "
                                                  "one token, one name and one role")
        seen.setdefault(token.sha256, index)


def _services(config: EngineConfig) -> Iterator[Finding]:
    for name, svc in config.services.items():
        for site, site_config in svc.sites.items():
            if not site_config.probes:
                yield f"services.{name}.sites.{site}.probes", (
                    "no probe: the site's health would stay unknown, so it could never be failed over from or to")
        db = svc.database
        if db is None:
            continue
        seen: dict[tuple[str, int, str], str] = {}
        for site, conn in db.sites.items():
            where = f"services.{name}.database.sites.{site}"
            if site not in svc.sites:
                yield where, f"'{site}' is not a site of the service ({', '.join(sorted(svc.sites))})"
            ident = (conn.host.lower().rstrip("."), conn.port, conn.dbname)
            if ident in seen:
                yield where, (f"the same database as site '{seen[ident]}' ({conn.host}:{conn.port}/{conn.dbname}): "
                              "a failover would promote the primary onto itself")
            seen.setdefault(ident, site)
