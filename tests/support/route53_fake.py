"""Route 53 for the tests: moto in server mode behind a small aiohttp front that adds what moto 5.2 lacks.

moto's ``ChangeResourceRecordSets`` accepts a DELETE whose values were *ever* created (it checks
its change journal, not the live record set) and always reports ``INSYNC``. Real Route 53 refuses
a DELETE that does not match the live set exactly and a CREATE of a set that exists, failing the
whole batch with ``InvalidChangeBatch`` (400), and reports ``PENDING`` until the change reached
every authoritative server. The front enforces both from the live sets it reads back from moto, then
hands moto the batch's outcome in a form moto applies faithfully (moto 5.2 deletes a weighted set by
its SetIdentifier across the whole zone, and refuses a CREATE equal to an earlier one in its journal
while any set is listed from that name on): the DELETEs of the sets the batch removes, then an UPSERT
of every set the batch creates and of every set moto's zone-wide delete took with it. It answers
``PENDING`` for the first ``pending_polls`` ``GetChange`` calls of each change.
``GetHealthCheckStatus`` answers are scriptable through ``health`` (moto always says Success). Every
other request is forwarded to moto unchanged.

``before_change`` hooks run (in the event loop thread) before a batch is judged: a test makes a
concurrent foreign change there through :meth:`Route53Fake.client`.
"""

from __future__ import annotations

import asyncio
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

import aiohttp
import boto3
from aiohttp import web
from moto.moto_server.threaded_moto_server import ThreadedMotoServer

NS = "{https://route53.amazonaws.com/doc/2013-04-01/}"
KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def _error(code: str, message: str, status: int = 400) -> web.Response:
    body = (f'<?xml version="1.0"?><ErrorResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/">'
            f"<Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>"
            f"<RequestId>fake</RequestId></ErrorResponse>")
    return web.Response(status=status, body=body, content_type="text/xml")


def _parse_set(element: ET.Element) -> dict[str, Any]:
    values = sorted(v.text or "" for v in element.iter(f"{NS}Value"))
    ttl = element.findtext(f"{NS}TTL")
    return {"Name": (element.findtext(f"{NS}Name") or "").lower().rstrip(".") + ".",
            "Type": element.findtext(f"{NS}Type"), "TTL": int(ttl) if ttl else None, "Values": values,
            "SetIdentifier": element.findtext(f"{NS}SetIdentifier"), "Weight": element.findtext(f"{NS}Weight")}


def _item(rrset: dict[str, Any]) -> dict[str, Any]:
    """A listed set in the form :func:`_parse_set` gives a set of a batch (what an exact DELETE compares)."""
    return {"Name": rrset["Name"].lower(), "Type": rrset["Type"], "TTL": rrset.get("TTL"),
            "Values": sorted(r["Value"] for r in rrset.get("ResourceRecords", [])),
            "SetIdentifier": rrset.get("SetIdentifier"),
            "Weight": str(rrset["Weight"]) if "Weight" in rrset else None}


def _boto_set(element: ET.Element) -> dict[str, Any]:
    """A batch's ResourceRecordSet element as boto3 takes it (its flat fields and ResourceRecords)."""
    out: dict[str, Any] = {}
    for child in element:
        tag = child.tag.removeprefix(NS)
        if tag == "ResourceRecords":
            out[tag] = [{"Value": v.text or ""} for v in child.iter(f"{NS}Value")]
        elif tag in ("TTL", "Weight"):
            out[tag] = int(child.text or 0)
        elif len(child) == 0:
            out[tag] = child.text or ""
    return out


class Route53Fake:
    """moto's Route 53 plus the strict front (see the module docstring)."""

    def __init__(self) -> None:
        self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.moto_url = ""
        self.base_url = ""
        self.pending_polls = 2
        self.polls: dict[str, int] = {}
        self.batches: list[str] = []
        self.health: dict[str, list[str]] = {}  # health check id -> status texts ("Success: ...", "Failure: ...")
        self.before_change: list[Callable[[], None]] = []
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._lock = asyncio.Lock()

    def client(self) -> Any:
        """A boto3 client straight to moto (the tests' console: seeding and foreign changes)."""
        return boto3.session.Session().client("route53", region_name="us-east-1", endpoint_url=self.moto_url, **KEYS)

    def weigh(self, zone_id: str, name: str, rtype: str, weights: dict[str, tuple[int, list[str]]],
              ttl: int = 60) -> None:
        """Make ``name`` weighted straight at moto (the console): every set at name/type replaced by one set per
        site (SetIdentifier = site) with its (weight, values)."""
        client = self.client()
        page = client.list_resource_record_sets(HostedZoneId=zone_id, StartRecordName=name, StartRecordType=rtype)
        old = [r for r in page["ResourceRecordSets"] if r["Name"] == name and r["Type"] == rtype]
        creates = [{"Action": "CREATE", "ResourceRecordSet": {
            "Name": name, "Type": rtype, "TTL": ttl, "SetIdentifier": site, "Weight": weight,
            "ResourceRecords": [{"Value": v} for v in values]}} for site, (weight, values) in weights.items()]
        client.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": [
            {"Action": "DELETE", "ResourceRecordSet": r} for r in old] + creates})
        client.close()

    def weights(self, zone_id: str, name: str, rtype: str) -> dict[str, int]:
        """Each weighted set's weight at ``name`` as Route 53 (moto) holds it now."""
        client = self.client()
        page = client.list_resource_record_sets(HostedZoneId=zone_id, StartRecordName=name, StartRecordType=rtype)
        client.close()
        return {r["SetIdentifier"]: r["Weight"] for r in page["ResourceRecordSets"]
                if r["Name"] == name and r["Type"] == rtype and "SetIdentifier" in r}

    async def start(self) -> None:
        self.moto.start()
        host, port = self.moto.get_host_and_port()
        self.moto_url = f"http://{host}:{port}"
        self._session = aiohttp.ClientSession()
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
        self.moto.stop()

    def _live(self, zone_id: str) -> dict[tuple[str, str, str | None], dict[str, Any]]:
        """Every set in moto's zone by (name, type, SetIdentifier), as listed."""
        client = self.client()
        found: dict[tuple[str, str, str | None], dict[str, Any]] = {}
        for page in client.get_paginator("list_resource_record_sets").paginate(HostedZoneId=zone_id):
            for rrset in page["ResourceRecordSets"]:
                found[(rrset["Name"].lower(), rrset["Type"], rrset.get("SetIdentifier"))] = rrset
        client.close()
        return found

    def _apply(self, zone_id: str, body: bytes) -> web.Response | str:
        """InvalidChangeBatch unless every DELETE matches exactly and no CREATE meets an existing set; else the
        batch applied to moto (see the module docstring) and the new change's id."""
        listed = self._live(zone_id)
        live = {key: _item(rrset) for key, rrset in listed.items()}
        full = dict(listed)
        deleted: dict[tuple[str, str, str | None], dict[str, Any]] = {}
        created: dict[tuple[str, str, str | None], dict[str, Any]] = {}
        for change in ET.fromstring(body).iter(f"{NS}Change"):
            action = change.findtext(f"{NS}Action")
            rrset = change.find(f"{NS}ResourceRecordSet")
            assert rrset is not None
            item, whole = _parse_set(rrset), _boto_set(rrset)
            key = (item["Name"], item["Type"], item["SetIdentifier"])
            where = f"resource record set [name='{key[0]}', type='{key[1]}']"
            if action == "DELETE":
                if key not in live:
                    return _error("InvalidChangeBatch", f"Tried to delete {where} but it was not found")
                if live[key] != item:
                    return _error("InvalidChangeBatch", f"Tried to delete {where} but the values provided do not "
                                                        f"match the current values")
                del live[key]
                deleted[key] = full.pop(key)
                created.pop(key, None)
            elif action == "CREATE":
                if key in live:
                    return _error("InvalidChangeBatch", f"Tried to create {where} but it already exists")
                live[key] = item
                full[key] = created[key] = whole
            else:
                return _error("InvalidChangeBatch", f"the front judges CREATE and DELETE only, not {action}")
        gone = {key[2] for key in deleted if key[2] is not None and key not in full}
        moto = [{"Action": "DELETE", "ResourceRecordSet": rrset} for key, rrset in deleted.items() if key not in full]
        moto += [{"Action": "UPSERT", "ResourceRecordSet": rrset} for key, rrset in full.items()
                 if key in created or key[2] in gone]
        client = self.client()
        try:
            if moto:
                client.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": moto})
        finally:
            client.close()
        unique = f"C{len(self.batches) + 1:012d}"
        self.polls[unique] = 0
        self.batches.append(unique)
        return unique

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        change_id = re.fullmatch(r"/2013-04-01/change/(.+)", request.path)
        health = re.fullmatch(r"/2013-04-01/healthcheck/([^/]+)/status", request.path)
        if health and health.group(1) in self.health:
            return self._health(self.health[health.group(1)])
        if change_id and request.method == "GET":
            polls = self.polls.get(change_id.group(1), self.pending_polls)
            self.polls[change_id.group(1)] = polls + 1
            if polls < self.pending_polls:
                return self._change_info(change_id.group(1), "PENDING")
        batch = re.fullmatch(r"/2013-04-01/hostedzone/([^/]+)/rrset/?", request.path)
        if not (batch and request.method == "POST"):
            return await self._relay(request, body)
        async with self._lock:  # judge and apply as one step
            for hook in list(self.before_change):
                hook()
            applied = await asyncio.to_thread(self._apply, batch.group(1), body)
        if isinstance(applied, web.Response):
            return applied
        return self._change_info(applied, "PENDING", "ChangeResourceRecordSetsResponse")

    async def _relay(self, request: web.Request, body: bytes) -> web.Response:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with self._session.request(request.method, self.moto_url + request.path_qs, data=body,
                                         headers=headers) as reply:
            data = await reply.read()
            kind = reply.headers.get("Content-Type", "text/xml").split(";")[0]
            return web.Response(status=reply.status, body=data, content_type=kind)

    @staticmethod
    def _change_info(change_id: str, status: str, root: str = "GetChangeResponse") -> web.Response:
        body = (f'<?xml version="1.0"?><{root} xmlns="https://route53.amazonaws.com/doc/2013-04-01/">'
                f"<ChangeInfo><Id>/change/{change_id}</Id><Status>{status}</Status>"
                f"<SubmittedAt>2026-01-01T00:00:00Z</SubmittedAt></ChangeInfo></{root}>")
        return web.Response(body=body, content_type="text/xml")

    @staticmethod
    def _health(statuses: list[str]) -> web.Response:
        observations = "".join(
            f"<HealthCheckObservation><Region>{region}</Region><IPAddress>127.0.0.{n}</IPAddress><StatusReport>"
            f"<Status>{status}</Status><CheckedTime>2026-01-01T00:00:00Z</CheckedTime></StatusReport>"
            f"</HealthCheckObservation>"
            for n, (region, status) in enumerate(zip(("us-east-1", "eu-west-1", "ap-southeast-1", "us-west-2"),
                                                     statuses, strict=False), start=1))
        body = (f'<?xml version="1.0"?><GetHealthCheckStatusResponse '
                f'xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><HealthCheckObservations>{observations}'
                f"</HealthCheckObservations></GetHealthCheckStatusResponse>")
        return web.Response(body=body, content_type="text/xml")
