"""Cloudflare provider through the official SDK (``AsyncCloudflare``, extra ``[cloudflare]``).

Cloudflare has no conditional write, so a shift is a *batch* (``dns.records.batch``, one
database transaction on Cloudflare's side) whose first operation deletes the epoch TXT record
by the id that was read. A rival that shifted first has already deleted that id, so our batch
fails as a whole and changes nothing; we read back and raise DnsConflict. The same batch patches
the records and posts the new epoch record, so records and epoch change together. Without an
epoch record (first shift), the records' own ids are the token: they are deleted and re-posted.

SDK pitfalls handled here (see ``shared/notes/sdks-bind-postgres.md``): lists read one page with
an explicit ``per_page`` (the SDK's auto-pager stops only on an empty page); a 200 with
``success: false`` returns None instead of raising; the SDK's own retries (429 with Retry-After,
5xx, timeouts) are bounded by ``attempts``; and ``CLOUDFLARE_*`` environment variables cannot
replace the configured token, URL or add other credentials.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import cloudflare
from cloudflare import AsyncCloudflare

from actions.dns.errors import DnsAuthError, DnsConfigError, DnsConflict, DnsError, DnsUnavailable
from actions.dns.state import DnsState, RecordState, new_op, parse_epoch, planned_state, site_of
from engine.config.dns import CloudflareConfig, DnsConfig, RecordConfig, canonical_value

DEFAULT_BASE_URL = "https://api.cloudflare.com/client/v4"
_PER_PAGE = 100
_MAX_BACKOFF = 8.0  # the SDK's longest pause between two tries
_CREDENTIAL_HEADERS = {"authorization", "x-auth-key", "x-auth-email", "x-auth-user-service-key"}
T = TypeVar("T")


class _TokenOnlyClient(AsyncCloudflare):
    """The SDK client, authenticated by the configured token alone whatever the environment says."""

    def __init__(self, *, token: str, **kwargs: Any) -> None:
        super().__init__(api_token=token, **kwargs)
        self.api_key = self.api_email = self.user_service_key = None  # not from CLOUDFLARE_* variables
        self._token = token

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"}

    @property
    def default_headers(self) -> dict[str, Any]:
        headers = {k: v for k, v in super().default_headers.items() if k.lower() not in _CREDENTIAL_HEADERS}
        return {**headers, **self.auth_headers}  # CLOUDFLARE_CUSTOM_HEADERS cannot add credentials


class _Refused(Exception):
    """A 4xx that is not about credentials (e.g. the batch's record ids no longer exist)."""


def _strip_quotes(text: str) -> str:
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text


class CloudflareProvider:
    """Reads and shifts a service's records in a Cloudflare zone."""

    def __init__(self, config: DnsConfig, service: str, *, client: AsyncCloudflare | None = None) -> None:
        if not isinstance(config.provider, CloudflareConfig):
            raise TypeError("CloudflareProvider needs a cloudflare provider config")
        self._config = config
        self._p: CloudflareConfig = config.provider
        self._client = client or _TokenOnlyClient(
            token=self._p.api_token.get_secret_value(), base_url=self._p.base_url or DEFAULT_BASE_URL,
            max_retries=self._p.attempts - 1, timeout=self._p.timeout)
        self._zone_id: str | None = None
        self.epoch_name = config.epoch_fqdn(service)
        self._configs = {config.fqdn(r.name): r for r in config.records}
        self._extras: dict[str, dict[str, Any]] = {}  # record id -> proxied/comment to keep on re-post
        self._deadline = self._p.attempts * self._p.timeout + (self._p.attempts - 1) * _MAX_BACKOFF + 1

    def __repr__(self) -> str:
        return f"CloudflareProvider(zone={self._p.zone!r}, base_url={self._p.base_url or DEFAULT_BASE_URL!r})"

    async def aclose(self) -> None:
        await self._client.close()

    async def _call(self, what: str, call: Callable[[], Awaitable[T | None]]) -> T:
        """One SDK call under a deadline, its errors mapped onto the DnsError tree."""
        tries = f"after {self._p.attempts} tr{'y' if self._p.attempts == 1 else 'ies'}"
        try:
            async with asyncio.timeout(self._deadline):
                result = await call()
        except (cloudflare.AuthenticationError, cloudflare.PermissionDeniedError) as exc:
            raise DnsAuthError(f"Cloudflare refused the API token for zone {self._p.zone} "
                               f"({exc.status_code}) during {what}") from None
        except cloudflare.RateLimitError:
            raise DnsUnavailable(f"{what}: Cloudflare rate limit (429) {tries}") from None
        except cloudflare.InternalServerError as exc:
            raise DnsUnavailable(f"{what}: Cloudflare status {exc.status_code} {tries}") from None
        except (cloudflare.APITimeoutError, TimeoutError):
            raise DnsUnavailable(f"{what}: timeout {tries}") from None
        except cloudflare.APIConnectionError:
            raise DnsUnavailable(f"{what}: cannot connect to Cloudflare {tries}") from None
        except cloudflare.APIStatusError as exc:
            raise _Refused(f"{exc.status_code} {_first_error(exc.body)}") from None
        if result is None:
            raise DnsUnavailable(f"{what}: Cloudflare answered success: false")
        return result

    async def _zone(self) -> str:
        if self._zone_id is None:
            page = await self._call("zone lookup", lambda: self._client.zones.list(
                name=self._p.zone, per_page=5))
            if page.result is None:
                raise DnsUnavailable("zone lookup: Cloudflare answered success: false")
            if not page.result:
                raise DnsConfigError(f"unknown zone: Cloudflare has no zone {self._p.zone} for this token")
            self._zone_id = page.result[0].id
        return self._zone_id

    async def _records_at(self, zone_id: str, name: str, rtype: str | None = None) -> list[Any]:
        kwargs: dict[str, Any] = {"zone_id": zone_id, "name": {"exact": name.rstrip(".")},
                                  "per_page": _PER_PAGE}
        if rtype:
            kwargs["type"] = rtype
        try:
            page = await self._call(f"read {name.rstrip('.')}",
                                    lambda: self._client.dns.records.list(**kwargs))
        except _Refused as exc:
            raise DnsError(f"Cloudflare refused to list {name.rstrip('.')}: {exc}") from None
        if page.result is None:  # a list page with success: false carries result None
            raise DnsUnavailable(f"read {name.rstrip('.')}: Cloudflare answered success: false")
        return list(page.result)

    def _record_state(self, fqdn: str, config: RecordConfig, found: list[Any]) -> RecordState:
        mine = [r for r in found if r.type == config.type]
        if not mine:
            cname = next((r for r in found if r.type == "CNAME"), None)
            if cname is not None and config.type != "CNAME":
                raise DnsConfigError(f"{fqdn.rstrip('.')} is a CNAME (to {cname.content}), "
                                     f"expected {config.type}")
            raise DnsConfigError(f"record missing: no {config.type} record at {fqdn.rstrip('.')} "
                                 f"in zone {self._p.zone}")
        for record in mine:
            self._extras[record.id] = {"proxied": bool(getattr(record, "proxied", False)),
                                       "comment": getattr(record, "comment", None)}
        pairs = sorted((canonical_value(config.type, r.content or ""), r.id) for r in mine)
        values = tuple(v for v, _id in pairs)
        return RecordState(fqdn, config.type, int(mine[0].ttl), values, site_of(values, config.targets),
                           refs=tuple(i for _v, i in pairs))

    async def read(self, records: Sequence[RecordConfig] | None = None) -> DnsState:
        """List every record's name and the epoch TXT (one page each, concurrently)."""
        zone_id = await self._zone()
        chosen = list(records or self._config.records)
        names = [self._config.fqdn(r.name) for r in chosen]
        results = await asyncio.gather(*(self._records_at(zone_id, n) for n in names),
                                       self._records_at(zone_id, self.epoch_name, "TXT"),
                                       return_exceptions=True)
        for result in results:  # each call has a deadline; all have finished
            if isinstance(result, BaseException):
                raise result
        lists = [r for r in results if isinstance(r, list)]
        states = tuple(self._record_state(n, c, found)
                       for n, c, found in zip(names, chosen, lists, strict=False))
        txt = lists[-1]
        if len(txt) > 1:
            raise DnsConfigError(f"epoch record {self.epoch_name.rstrip('.')} has {len(txt)} TXT records, "
                                 f"expected one")
        epoch = parse_epoch(_strip_quotes(txt[0].content or "") if txt else None, self.epoch_name)
        if txt:
            epoch = replace(epoch, ref=txt[0].id)
        return DnsState(self._p.zone, states, epoch, self.epoch_name)

    def _batch(self, expected: DnsState, planned: DnsState) -> dict[str, list[dict[str, Any]]]:
        deletes: list[dict[str, Any]] = []
        patches: list[dict[str, Any]] = []
        posts: list[dict[str, Any]] = []
        token = expected.epoch.ref
        if token is not None:
            deletes.append({"id": token})
        for old, new in zip(expected.records, planned.records, strict=True):
            name, ids = new.name.rstrip("."), list(old.refs)
            keep = ids if token is not None else []  # no epoch record: the record ids are the token
            extras = self._extras.get(ids[0], {}) if ids else {}
            for record_id, value in zip(keep, new.values, strict=False):
                patches.append({"id": record_id, "type": new.rtype, "name": name, "content": value,
                                "ttl": new.ttl})
            deletes += [{"id": i} for i in ids[len(new.values):]] if keep else [{"id": i} for i in ids]
            for value in new.values[len(keep):]:
                posts.append({"type": new.rtype, "name": name, "content": value, "ttl": new.ttl,
                              **{k: v for k, v in extras.items() if v is not None}})
        posts.append({"type": "TXT", "name": planned.epoch_name.rstrip("."),
                      "content": f'"{planned.epoch.text}"', "ttl": min(r.ttl for r in planned.records)})
        return {"deletes": deletes, "patches": patches, "posts": posts}

    async def shift(self, expected: DnsState, target_site: str, new_epoch: int) -> DnsState:
        """One batch: consume the epoch record read (compare), patch the records, post epoch N+1."""
        op = new_op()
        planned = planned_state(expected, self._configs, target_site, new_epoch, op)
        zone_id = await self._zone()
        body = self._batch(expected, planned)
        try:
            done = await self._call(f"shift of zone {self._p.zone}",
                                    lambda: self._client.dns.records.batch(zone_id=zone_id, **body))  # type: ignore[arg-type]
        except _Refused as exc:
            refusal: str | None = str(exc)
        except DnsUnavailable as exc:
            if "success: false" not in str(exc):
                raise
            refusal = None
        else:
            return _with_ids(planned, [*(done.patches or []), *(done.posts or [])])
        current = await self.read([self._configs[r.name] for r in expected.records])
        if current.epoch.op == op:  # a retried batch found our own earlier, applied one
            return current
        if current == expected:
            if refusal is None:
                raise DnsUnavailable(f"Cloudflare answered success: false to the shift of zone "
                                     f"{self._p.zone}; nothing changed")
            raise DnsError(f"Cloudflare refused the shift of zone {self._p.zone} ({refusal}); "
                           f"nothing changed")
        raise DnsConflict(f"zone {self._p.zone} changed since it was read: expected {expected.describe()}, "
                          f"found {current.describe()}", current=current, expected=expected)


def _with_ids(planned: DnsState, written: Sequence[Any]) -> DnsState:
    """``planned`` with the record ids Cloudflare reported for the batch (for the next shift's token)."""
    ids: dict[tuple[str, str], list[str]] = {}
    for record in written:
        ids.setdefault((str(record.name).rstrip(".").lower(), str(record.type)), []).append(str(record.id))
    records = tuple(replace(r, refs=tuple(ids.get((r.name.rstrip("."), r.rtype), ())))
                    for r in planned.records)
    epoch_ids = ids.get((planned.epoch_name.rstrip("."), "TXT"), [])
    epoch = replace(planned.epoch, ref=epoch_ids[0] if epoch_ids else None)
    return replace(planned, records=records, epoch=epoch)


def _first_error(body: object) -> str:
    if isinstance(body, dict):
        errors = body.get("errors") or []
        if errors and isinstance(errors[0], dict):
            return f"{errors[0].get('code')}: {errors[0].get('message')}"
    return "refused"
