"""Cloudflare provider through the official SDK (``AsyncCloudflare``, extra ``[cloudflare]``).

Cloudflare has no conditional write, so a shift is read-compare-write:

1. *read*: a consistent snapshot (see :meth:`CloudflareProvider.read`) of the records and the
   epoch record, right before writing;
2. *compare*: unless that snapshot equals ``expected`` (values, TTLs, epoch number/site/op/text),
   raise DnsConflict carrying it; nothing is written. A hand edit made after the caller's read,
   or a torn ``expected`` (records of one moment, epoch of another), is refused here;
3. *write*: one *batch* (``dns.records.batch``, one database transaction on Cloudflare's side)
   whose first operation deletes the epoch TXT record by the id just read. A rival that shifted
   between our compare and our batch has already deleted that id, so our batch fails as a whole
   and changes nothing; we read back and raise DnsConflict. The batch patches the records by the
   ids just read and posts the new epoch record, so records and epoch change together. Without an
   epoch record (first shift), the records' own ids are the token: they are deleted and re-posted.

What step 3's guard cannot see is a *hand edit* of a record (not through this provider) in the
milliseconds between step 1 and step 3: Cloudflare has no compare on content. Shifts through this
provider always replace the epoch record, so they are always seen.

A batch whose answer is lost (timeout, 5xx after the SDK's retries) is read back once: our own op
token in place means success; otherwise DnsUnavailable stays.

SDK pitfalls handled here (see ``shared/notes/sdks-bind-postgres.md``): lists set ``per_page`` and
page by ``result_info.total_pages`` themselves (the SDK's auto-pager stops only on an empty page);
a 200 with ``success: false`` returns None instead of raising; the SDK's own retries (429, 5xx,
timeouts) are bounded by ``attempts``, and a ``Retry-After`` longer than :data:`MAX_RETRY_AFTER`
is not waited for: it ends in DnsUnavailable saying so; ``CLOUDFLARE_*`` environment variables
cannot replace the configured token, URL (the default is :data:`DEFAULT_BASE_URL`) or add other
credentials. Verified with cloudflare 5.9.0.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import cloudflare
import httpx
from cloudflare import AsyncCloudflare

from actions.dns.errors import (
    DnsAuthError,
    DnsConfigError,
    DnsConflict,
    DnsError,
    DnsRefused,
    DnsUnavailable,
)
from actions.dns.state import (
    DnsState,
    RecordState,
    conflict,
    derive_op,
    is_applied,
    new_op,
    parse_epoch,
    planned_state,
    resumed_state,
    site_of,
)
from engine.config.dns import CloudflareConfig, DnsConfig, RecordConfig, canonical_value

DEFAULT_BASE_URL = "https://api.cloudflare.com/client/v4"
_PER_PAGE = 100
_MAX_PAGES = 10  # one name never has more than a few records; more pages than this is refused
_SNAPSHOT_TRIES = 3
_MAX_BACKOFF = 8.0  # the SDK's longest pause between two tries
MAX_RETRY_AFTER = _MAX_BACKOFF  # a longer Retry-After is not waited for (it would overrun the deadline)
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

    def _should_retry(self, response: httpx.Response) -> bool:
        wait = self._parse_retry_after_header(response.headers)
        if wait is not None and wait > MAX_RETRY_AFTER:
            return False  # the SDK would sleep up to 60 s: past our deadline; report it instead
        return super()._should_retry(response)


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
        self._service = service
        self._salt = new_op()
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
        except (cloudflare.RateLimitError, cloudflare.InternalServerError) as exc:
            kind = "rate limit (429)" if exc.status_code == 429 else f"status {exc.status_code}"
            wait = _retry_after(exc.response)
            if wait is not None and wait > MAX_RETRY_AFTER:
                raise DnsUnavailable(f"{what}: Cloudflare {kind} asks to retry after {wait:g}s, longer than the "
                                     f"{MAX_RETRY_AFTER:g}s this provider waits; try again later") from None
            raise DnsUnavailable(f"{what}: Cloudflare {kind} {tries}") from None
        except (cloudflare.APITimeoutError, TimeoutError):
            raise DnsUnavailable(f"{what}: timeout {tries}") from None
        except cloudflare.APIConnectionError:
            raise DnsUnavailable(f"{what}: cannot connect to Cloudflare {tries}") from None
        except cloudflare.APIStatusError as exc:
            raise DnsRefused(f"Cloudflare refused the {what} ({exc.status_code} {_first_error(exc.body)})") from None
        if result is None:
            raise DnsUnavailable(f"{what}: Cloudflare answered success: false")
        return result

    async def _zone(self) -> str:
        if self._zone_id is None:
            page = await self._call(f"lookup of zone {self._p.zone}", lambda: self._client.zones.list(
                name=self._p.zone, per_page=5))
            if page.result is None:
                raise DnsUnavailable(f"lookup of zone {self._p.zone}: Cloudflare answered success: false")
            if not page.result:
                raise DnsConfigError(f"unknown zone: Cloudflare has no zone {self._p.zone} for this token")
            self._zone_id = page.result[0].id
        return self._zone_id

    async def _records_at(self, zone_id: str, name: str, rtype: str | None = None) -> list[Any]:
        """Every record at ``name`` (of ``rtype``): pages of 100, walked by ``result_info``, at most 10."""
        what = f"read {name.rstrip('.')}"
        found: list[Any] = []
        for number in range(1, _MAX_PAGES + 1):
            kwargs: dict[str, Any] = {"zone_id": zone_id, "name": {"exact": name.rstrip(".")},
                                      "per_page": _PER_PAGE, "page": number}
            if rtype:
                kwargs["type"] = rtype
            page = await self._call(what, functools.partial(self._client.dns.records.list, **kwargs))
            if page.result is None:  # a list page with success: false carries result None
                raise DnsUnavailable(f"{what}: Cloudflare answered success: false")
            found += page.result
            info = page.result_info
            total = getattr(info, "total_count", None) if info is not None else None
            pages = getattr(info, "total_pages", None) if info is not None else None
            if total is None:  # no result_info: a short page is the last one
                if len(page.result) < _PER_PAGE:
                    return found
                continue
            if not page.result or len(found) >= int(total) or number >= int(pages or 1):
                if len(found) < int(total):
                    raise DnsUnavailable(f"{what}: Cloudflare reports {total} records but listed {len(found)}")
                return found
        raise DnsConfigError(f"{what}: more than {_MAX_PAGES * _PER_PAGE} records at one name")

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

    async def _epoch_records(self, zone_id: str) -> list[Any]:
        txt = await self._records_at(zone_id, self.epoch_name, "TXT")
        if len(txt) > 1:
            raise DnsConfigError(f"epoch record {self.epoch_name.rstrip('.')} has {len(txt)} TXT records, "
                                 f"expected one")
        return txt

    async def read(self, records: Sequence[RecordConfig] | None = None) -> DnsState:
        """A consistent snapshot: the epoch record, then every record (concurrently), then the epoch again.

        Every shift through this provider replaces the epoch record (new id), so the same epoch id
        and text before and after the record lists means no shift committed in between; otherwise
        the read is repeated (at most 3 times, then DnsUnavailable).
        """
        zone_id = await self._zone()
        chosen = list(records or self._config.records)
        names = [self._config.fqdn(r.name) for r in chosen]
        before = await self._epoch_records(zone_id)
        for _ in range(_SNAPSHOT_TRIES):
            results = await asyncio.gather(*(self._records_at(zone_id, n) for n in names), return_exceptions=True)
            for result in results:  # each call has a deadline; all have finished
                if isinstance(result, BaseException):
                    raise result
            after = await self._epoch_records(zone_id)
            if _same_epoch(before, after):
                break
            before = after
        else:
            raise DnsUnavailable(f"read of zone {self._p.zone}: the epoch record changed during each of "
                                 f"{_SNAPSHOT_TRIES} reads; no consistent snapshot")
        lists = [r for r in results if isinstance(r, list)]
        states = tuple(self._record_state(n, c, found) for n, c, found in zip(names, chosen, lists, strict=True))
        txt = after
        epoch = parse_epoch(_strip_quotes(txt[0].content or "") if txt else None, self.epoch_name)
        if txt:
            epoch = replace(epoch, ref=txt[0].id)
        return DnsState(self._p.zone, states, epoch, self.epoch_name)

    async def retime(self, expected: DnsState, ttls: Mapping[str, int]) -> DnsState:
        """Change only the TTLs of ``expected``'s records (absolute name -> seconds): read, compare, one batch of
        patches with the same contents; the epoch record is untouched. DnsConflict when the zone moved."""
        chosen = [self._configs[r.name] for r in expected.records]
        zone_id = await self._zone()
        current = await self.read(chosen)
        if current != expected:
            raise self._conflict(expected, current)
        patches = [{"id": record_id, "type": r.rtype, "name": r.name.rstrip("."), "content": value,
                    "ttl": int(ttls.get(r.name, r.ttl))}
                   for r in current.records for record_id, value in zip(r.refs, r.values, strict=False)]
        if patches:
            await self._call(f"TTL change in zone {self._p.zone}",
                             lambda: self._client.dns.records.batch(zone_id=zone_id, patches=patches))  # type: ignore[arg-type]
        return await self.read(chosen)

    async def validate(self, expected: DnsState, target_site: str, new_epoch: int) -> str:
        """Prove what can be proven without writing (a shadow drill): the token is active
        (``/user/tokens/verify``), the zone reads, and it is still what ``expected`` shows, so the
        read-compare-write of a shift would go ahead. Cloudflare has no dry run of a batch, so the
        token's edit permission on the zone is not proven."""
        verified = await self._call("token verification", self._client.user.tokens.verify)
        status = getattr(verified, "status", None)
        if status != "active":
            raise DnsAuthError(f"Cloudflare reports the API token for zone {self._p.zone} as {status}")
        current = await self.read([self._configs[r.name] for r in expected.records])
        if current.epoch.number != expected.epoch.number or current.site != expected.site:
            raise self._conflict(expected, current)
        return (f"Cloudflare token active, zone {self._p.zone} reads {current.describe()}: a shift to "
                f"{target_site} at epoch {new_epoch} would go ahead (nothing changed)")

    def _batch(self, current: DnsState, planned: DnsState) -> dict[str, list[dict[str, Any]]]:
        """The batch from ``current`` (just read, with its ids) to ``planned``."""
        deletes: list[dict[str, Any]] = []
        patches: list[dict[str, Any]] = []
        posts: list[dict[str, Any]] = []
        token = current.epoch.ref
        if token is not None:
            deletes.append({"id": token})
        for old, new in zip(current.records, planned.records, strict=True):
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

    def _conflict(self, expected: DnsState, current: DnsState) -> DnsConflict:
        return conflict(self._p.zone, expected, current)

    async def shift(self, expected: DnsState, target_site: str, new_epoch: int,
                    *, op: str | None = None) -> DnsState:
        """Read again, compare with ``expected``, then one batch: consume the epoch record, patch, post N+1."""
        op = op or derive_op(self._salt, self._service, new_epoch, target_site)
        chosen = [self._configs[r.name] for r in expected.records]
        resumed = resumed_state(expected, self._configs, target_site, new_epoch, op)
        if resumed is not None:  # the caller already read our own write: confirm it is still there
            current = await self.read(chosen)
            if is_applied(current, resumed):
                return current
            raise self._conflict(expected, current)
        planned = planned_state(expected, self._configs, target_site, new_epoch, op)
        zone_id = await self._zone()
        current = await self.read(chosen)
        if current != expected:
            if is_applied(current, planned):  # an earlier try of ours was applied
                return current
            raise self._conflict(expected, current)
        body = self._batch(current, planned)
        lost: DnsUnavailable | None = None
        refusal: str | None = None
        try:
            done = await self._call(f"shift of zone {self._p.zone}",
                                    lambda: self._client.dns.records.batch(zone_id=zone_id, **body))  # type: ignore[arg-type]
        except DnsRefused as exc:
            refusal = str(exc)
        except DnsUnavailable as exc:
            if "success: false" not in str(exc):
                lost = exc  # maybe applied with the answer lost: the read-back decides
        else:
            return _with_ids(planned, [*(done.patches or []), *(done.posts or [])])
        try:
            after = await self.read(chosen)
        except DnsError:
            if lost is not None:
                raise lost from None
            raise
        if is_applied(after, planned):  # a retried or lost batch of ours was applied
            return after
        if lost is not None:
            raise lost
        if after == current:
            if refusal is None:
                raise DnsUnavailable(f"Cloudflare answered success: false to the shift of zone "
                                     f"{self._p.zone}; nothing changed")
            raise DnsError(f"{refusal}; nothing changed")
        raise self._conflict(expected, after)


def _same_epoch(before: list[Any], after: list[Any]) -> bool:
    return [(r.id, r.content) for r in before] == [(r.id, r.content) for r in after]


def _retry_after(response: httpx.Response | None) -> float | None:
    if response is None:
        return None
    for header, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        try:
            return float(response.headers.get(header, "")) / scale
        except ValueError:
            continue
    return None


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
