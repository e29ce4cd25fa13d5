"""The demo's story, from setup to summary; :func:`run` is what ``failover-engine demo`` calls.

Setup (everything on 127.0.0.1): the two sample sites in this process, an authoritative DNS for
example.test (BIND when ``named`` is installed, else :mod:`engine.demo.dns_server`), a PostgreSQL 15
pair when it is installed, then engine-gcp, engine-azure and the witness as processes, configured by
:mod:`engine.demo.config`. Then: steady state, the break (the gcp sample site stops), the narration
of :mod:`engine.demo.narrate` until the failover runbook is done and DNS answers azure, gcp back,
failback through the API (prepare-failback first when there is a database; with both sites healthy
the failback runs as a switchover), and a summary of the timings.

Every wait has a deadline; missing one raises :class:`~engine.demo.voters.DemoFailed`, which
:func:`run` turns into one clear message and exit code 1. Whatever happens (Ctrl-C included), every
part is stopped before :func:`run` returns.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import json
import os
import secrets
import shutil
import signal
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.exception
import dns.message
import dns.rdatatype

import engine.demo.config as cfg
from engine.demo.bind import named_binary, start_named
from engine.demo.dns_server import BuiltinDns, Zone
from engine.demo.narrate import Narrator, Printer
from engine.demo.postgres import DemoPostgres, unavailable
from engine.demo.sample_site import SampleSite
from engine.demo.voters import Api, DemoFailed, Voter, free_port, stop_voters, wait_started
from engine.http.auth import hash_token

SERVICE = "shop"
RECORDS: tuple[tuple[str, str, int, tuple[str, ...]], ...] = (
    (cfg.RECORD, "A", cfg.TTL, (cfg.TARGETS["gcp"],)),
    (cfg.EPOCH_RECORD, "TXT", cfg.TTL, ('"epoch=1 site=gcp op=initial"',)),
)
REASON = "failover-engine demo: gcp is back"


class Demo:
    def __init__(self, *, dns_choice: str = "auto", database: bool = True) -> None:
        self.dns_choice, self.want_database = dns_choice, database
        self.out = Printer()
        self.started = time.monotonic()
        self.workdir = Path(tempfile.mkdtemp(prefix="failover-demo-"))
        self.viewer, self.operator = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
        self.api = Api(self.viewer, self.operator)
        self.sites: dict[str, SampleSite] = {}
        self.dns: Any = None
        self.db: Any = None
        self.voters: list[Voter] = []
        self.narrator: Narrator | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._threads: list[concurrent.futures.Future[Any]] = []
        self._pool = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="demo-setup")
        self.failed = False
        self.completed = False

    # -- helpers -----------------------------------------------------------------------------------------
    def say(self, text: str = "", *, at: float | None = None) -> None:
        self.out.line(text, at)

    def now(self, text: str) -> None:
        self.out.line(text, time.time())

    def voter(self, vid: str) -> Voter:
        return next(v for v in self.voters if v.id == vid)

    async def in_thread(self, fn: Callable[[], Any]) -> Any:
        """Run blocking setup in a thread that cleanup can still wait for after a Ctrl-C."""
        future = self._pool.submit(fn)
        self._threads.append(future)
        return await asyncio.wrap_future(future)

    async def wait(self, check: Callable[[], Awaitable[Any]], timeout: float, what: str,
                   last: Callable[[], str] | None = None) -> Any:
        """Poll ``check`` every 100 ms until it returns something true; DemoFailed naming ``what`` (and ``last()``,
        what was seen last) after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            result = await check()
            if result:
                return result
            if time.monotonic() > deadline:
                seen = f"; last seen: {last()}" if last is not None else ""
                raise DemoFailed(f"{what} did not happen within {timeout:g}s{seen}")
            await asyncio.sleep(0.1)

    async def dns_answer(self) -> str:
        """``app.example.test A`` as the authoritative server answers it now (what the printed dig shows)."""
        query = dns.message.make_query(f"{cfg.RECORD}.{cfg.ZONE}", "A")
        try:
            response = await dns.asyncquery.udp(query, self.dns.host, port=self.dns.port, timeout=2)
        except (dns.exception.DNSException, OSError):
            return "no answer"
        values = sorted(r.to_text() for rrset in response.answer if rrset.rdtype == dns.rdatatype.A for r in rrset)
        sites = {v: k for k, v in cfg.TARGETS.items()}
        return " ".join(values) + f"  ({', '.join(sites.get(v, '?') for v in values)})" if values else "nothing"

    def dig(self) -> str:
        return f"dig @{self.dns.host} -p {self.dns.port} {cfg.RECORD}.{cfg.ZONE} A +short"

    # -- setup ---------------------------------------------------------------------------------------------
    async def setup(self) -> None:
        self.say("failover-engine demo: a service in two clouds on one machine (127.0.0.1 only), three voters,")
        self.say("the primary breaks, the engines fail over, prove it, and fail back through the API.")
        self.say(f"work directory: {self.workdir}")
        self.say()
        for site in ("gcp", "azure"):
            self.sites[site] = await SampleSite(site).start()
        self.say(f"  sample sites  gcp {self.sites['gcp'].url}   azure {self.sites['azure'].url}")
        database = self._database_part() if self.want_database else None
        if not self.want_database:
            self.say("  PostgreSQL    skipped (--no-database): the demo runs without a database "
                     "(no fence/promote/consistency)")
        await asyncio.gather(self._start_dns(), database or asyncio.sleep(0))
        await self._start_voters()

    async def _start_dns(self) -> None:

        secret = base64.b64encode(secrets.token_bytes(32)).decode()
        named = named_binary() if self.dns_choice in ("auto", "bind") else None
        if self.dns_choice == "bind" and named is None:
            raise DemoFailed("--dns bind: named (BIND) is not installed")
        if named is not None:
            try:
                self.dns = await self.in_thread(lambda: start_named(
                    named, self.workdir / "named", zone=cfg.ZONE, records=RECORDS, key_name=cfg.KEY_NAME,
                    algorithm=cfg.ALGORITHM, secret=secret))
            except (RuntimeError, OSError) as exc:
                if self.dns_choice == "bind":
                    raise DemoFailed(f"BIND did not start: {_first_line(exc)}") from None
                self.say(f"  BIND did not start ({_first_line(exc)}): the demo uses its built-in DNS server")
        if self.dns is None:
            self.dns = await BuiltinDns(Zone(cfg.ZONE, RECORDS), key_name=cfg.KEY_NAME, algorithm=cfg.ALGORITHM,
                                        secret=secret).start()
        self.say(f"  DNS           {self.dns.kind} on {self.dns.address}: zone {cfg.ZONE}, "
                 f"{cfg.RECORD} A {cfg.TARGETS['gcp']} (gcp) / {cfg.TARGETS['azure']} (azure), "
                 f"epoch TXT {cfg.EPOCH_RECORD}, TSIG key {cfg.KEY_NAME}")

    async def _database_part(self) -> None:

        reason = unavailable()
        if reason is not None:
            self.say(f"  {reason}")
            return
        db = DemoPostgres()
        try:
            await self.in_thread(db.start)
        except (RuntimeError, OSError, ImportError) as exc:  # DemoPostgres.start turns psycopg's errors into these
            await asyncio.to_thread(db.stop)
            self.say(f"  PostgreSQL 15 did not start ({_first_line(exc)}): the demo runs without a database "
                     "(no fence/promote/consistency)")
            return
        except BaseException:  # Ctrl-C: the setup thread may still run; cleanup waits for it, then stops the pair
            self.db = db
            raise
        self.db = db
        gcp, azure = self.db.sites["gcp"], self.db.sites["azure"]
        self.say(f"  PostgreSQL    {self.db.version}: gcp 127.0.0.1:{gcp.port} (primary) -> azure "
                 f"127.0.0.1:{azure.port} by logical replication of accounts, orders and the engines' heartbeat table")

    async def _start_voters(self) -> None:

        ports = {vid: free_port() for vid, _site, _role in cfg.VOTERS}
        layout = cfg.Layout(
            sites={site: s.url for site, s in self.sites.items()}, voters=ports, dns=self.dns.address,
            database=None if self.db is None else {s: c.port for s, c in self.db.sites.items()},
            journal_dir=str(self.workdir),
            tokens=(("demo-operator", "operator", hash_token(self.operator)),
                    ("demo-viewer", "viewer", hash_token(self.viewer))))
        env = {**os.environ, **{name: secrets.token_urlsafe(24) for name in cfg.key_variables()},
               "TSIG_SECRET": self.dns.secret}
        for vid, site, role in cfg.VOTERS:
            path = self.workdir / f"{vid}.yaml"
            path.write_text(cfg.render(layout, vid))
            self.voters.append(Voter(vid, site, role, ports[vid], path, self.workdir / f"{vid}.log"))
        for voter in self.voters:
            voter.launch(env)
        self.say(f"  voters        {', '.join(f'{v.id} {v.url}' for v in self.voters)}")
        self.say("                probes every 1 s, down after 3 failures in a row, decision tick 500 ms; "
                 "configs and logs in the work directory")
        await wait_started(self.api, self.voters)

    async def steady(self) -> None:
        """Wait until every voter sees both sites up (and the standby's lag is known); show it."""
        async def settled() -> dict[str, Any] | None:
            views = {v.id: await self.api.get(v, "/v1/status") for v in self.voters}
            for status in views.values():
                svc = (status or {}).get("services", {}).get(SERVICE)
                if not svc or any(s["health"] != "up" for s in svc["sites"].values()) or status["quorum"] is False:
                    return None
            azure = views["engine-azure"]["services"][SERVICE]
            if self.db is not None and (azure["lag_s"] is None or (azure["replication"] or {}).get("state") != "up"):
                return None
            return views

        views = await self.wait(settled, 40, "every voter seeing both sites up")
        svc = views["engine-azure"]["services"][SERVICE]
        self.say(f"ready in {time.monotonic() - self.started:.1f}s")
        self.say()
        self.say("steady state")
        self.say(f"  gcp and azure are up for all 3 voters; {SERVICE} is active in {svc['active']} at epoch "
                 f"{svc['epoch']}; {svc['decision']['message'] if svc.get('decision') else ''}")
        if self.db is not None:
            self.say(f"  replication gcp -> azure: lag {svc['lag_s']:.1f}s (heartbeat written on gcp, read on azure)")
        self.say(f"  {self.dig()}   ->  {await self.dns_answer()}")
        self.say()

    # -- the story -------------------------------------------------------------------------------------
    async def failover(self) -> None:
        assert self.narrator is not None
        facts = self.narrator.facts
        await self.narrator.prime()
        self.out.t0 = time.time()
        await self.sites["gcp"].stop()
        self.now("BREAKING GCP: its sample site stops (connections refused); the engines notice on their own")
        self._tasks.append(asyncio.create_task(self.narrator.run(), name="narrator"))

        async def failed_over() -> dict[str, Any] | None:
            op = facts.operation("failover")
            if op is not None and op["state"] in ("halted", "stood_down", "aborted"):
                raise DemoFailed(f"the failover runbook ended {op['state']}: {op['message']}")
            return op if op is not None and op["state"] == "done" else None

        await self.wait(lambda: _ready(len(facts.down_at) >= 2), 25, "gcp declared down by a majority of voters")
        await self.wait(failed_over, 40, "the failover runbook finishing")
        await asyncio.sleep(0.4)  # the narrator prints the last lines first
        self.now(f"DNS now: {self.dig()}   ->  {await self.dns_answer()}")
        executor = self.voter("engine-azure")
        self.now(f"status page: {executor.url}/   (any user name; password: the viewer token {self.viewer})")
        if self.db is not None:
            rows = await self.in_thread(lambda: self.db.sites["azure"].execute(
                "INSERT INTO orders(account, amount, note) SELECT g, 10 * g, 'written in azure during the outage' "
                "FROM generate_series(1, 3) g RETURNING id"))
            self.now(f"the shop takes orders in azure: {len(rows)} orders written there (ids "
                     f"{', '.join(str(r[0]) for r in rows)}; the sequences were moved past gcp's at promotion)")

    async def failback(self) -> None:
        assert self.narrator is not None
        facts = self.narrator.facts
        executor = self.voter("engine-azure")
        self.say()
        self.sites["gcp"] = await SampleSite("gcp", port=self.sites["gcp"].port).start()
        self.now("BRINGING GCP BACK: its sample site answers again (failback is a human decision: the API)")
        if self.db is not None:
            await self._prepare_failback(executor)

        await self._wait_home_healthy(executor)
        status, body = await self.api.post(executor, f"/v1/services/{SERVICE}/failback", {"reason": REASON})
        for _ in range(10):  # the engine's own clock may see gcp healthy a moment later than this one did
            if status != 409 or not any(str(r).startswith("home_healthy") for r in body.get("reasons", [])):
                break
            await asyncio.sleep(0.5)
            status, body = await self.api.post(executor, f"/v1/services/{SERVICE}/failback", {"reason": REASON})
        if status != 202:
            raise DemoFailed(f"POST failback was refused ({status}): {body.get('detail') or body}")
        self.now(f"POST {executor.url}/v1/services/{SERVICE}/failback -> 202: operation {body['operation']} "
                 "(both sites healthy: it runs as a switchover)")

        async def failed_back() -> dict[str, Any] | None:
            op = facts.operations.get(body["operation"])
            if op is not None and op["state"] in ("halted", "stood_down", "aborted"):
                raise DemoFailed(f"the failback runbook ended {op['state']}: {op['message']}")
            return op if op is not None and op["state"] == "done" else None

        await self.wait(failed_back, 60, "the failback runbook finishing")
        await asyncio.sleep(0.4)
        self.now(f"DNS now: {self.dig()}   ->  {await self.dns_answer()}")
        if self.db is not None:
            here = await self.in_thread(lambda: self.db.count("gcp", "note = 'written in azure during the outage'"))
            self.now(f"the {here} orders written in azure during the outage are in gcp's database: nothing lost")
            lag = await self._replication_flowing(executor, "gcp -> azure")
            self.now(f"replication gcp -> azure is up again, lag {lag:.1f}s: azure is the standby, the service is "
                     "protected again")

    async def _replication_flowing(self, executor: Voter, direction: str) -> float:
        """Until the executor sees the replication signal up with a lag under 2 s; that lag."""
        seen: dict[str, Any] = {}

        async def flowing() -> Any:
            status = await self.api.get(executor, "/v1/status")
            svc = (status or {}).get("services", {}).get(SERVICE) or {}
            seen.update(lag_s=svc.get("lag_s"), replication=svc.get("replication"))
            lag = svc.get("lag_s")
            up = (svc.get("replication") or {}).get("state") == "up"
            return {"lag": lag} if up and lag is not None and lag < 2 else None

        found = await self.wait(flowing, 30, f"replication {direction} catching up", lambda: json.dumps(seen))
        return float(found["lag"])

    async def _wait_home_healthy(self, executor: Voter) -> None:
        """Until the executor has seen every gcp signal up for ``failback_healthy_for`` (a gate of failback)."""
        need = cfg.FAILBACK_HEALTHY_FOR
        seen: dict[str, Any] = {}

        async def healthy_long_enough() -> bool:
            status = await self.api.get(executor, "/v1/status?signals=all")
            site = ((status or {}).get("services", {}).get(SERVICE) or {}).get("sites", {}).get("gcp") or {}
            signals = site.get("signals") or []
            seen.update(health=site.get("health"), signals=[(s["name"], s["state"]) for s in signals])
            up = bool(signals) and all(s["state"] == "up" for s in signals)
            return up and time.time() - max(float(s.get("since") or 0) for s in signals) >= need + 0.1

        await self.wait(healthy_long_enough, 30, f"gcp up for {need:g}s (failback_healthy_for)", lambda: str(seen))
        self.now(f"gcp has been up for {need:g}s (failback_healthy_for): failback may start")

    async def _prepare_failback(self, executor: Voter) -> None:
        status, body = await self.api.post(executor, f"/v1/services/{SERVICE}/prepare-failback", {"reason": REASON})
        if status != 200:
            raise DemoFailed(f"POST prepare-failback was refused ({status}): {body.get('detail') or body}")
        head, _, rest = str(body["sentence"]).partition(": ")
        self.now(f"POST {executor.url}/v1/services/{SERVICE}/prepare-failback -> 200: {head}")
        for part in rest.split("; ") if rest else []:
            self.say(f"{'':<10}{'':<12}   - {part}")

        lag = await self._replication_flowing(executor, "azure -> gcp")
        self.now(f"replication azure -> gcp is up, lag {lag:.1f}s: gcp's database has every write made in azure")

    # -- summary ---------------------------------------------------------------------------------------
    def summary(self) -> None:
        assert self.narrator is not None and self.out.t0 is not None
        facts, t0 = self.narrator.facts, self.out.t0
        failover, failback = facts.operation("failover"), facts.operation("failback")
        assert failover is not None and failback is not None
        rows: list[tuple[str, str, str]] = [("gcp broken (its sample site stopped)", "t+0.0s", "")]
        if facts.first_failure is not None:
            rows.append(("first failed probe", _t(facts.first_failure, t0), ""))
        downs = sorted(facts.down_at.values())
        rows.append(("detection: gcp down for 2 of 3 voters", _t(downs[1], t0), f"{downs[1] - t0:.2f}s"))
        decided = facts.decision[0] if facts.decision else failover["created_at"]
        rows.append((f"decision: failover, {failover['voter']} acts", _t(decided, t0), f"{decided - downs[1]:.2f}s"))
        rows += _steps(failover, t0)
        verified = (failover["steps"].get("verify_dns") or {}).get("finished_at")
        if verified:
            rows.append(("DNS verified: every server answers azure", _t(verified, t0), ""))
        rows.append(("runbook total", _t(failover["finished_at"], t0),
                     f"{failover['finished_at'] - failover['created_at']:.2f}s"))
        recovered = verified or failover["finished_at"]
        rows.append(("TIME TO RECOVERY (break -> DNS verified on azure)", "", f"{recovered - t0:.2f}s"))
        rows.append(("failback (switchover through the API)", _t(failback["created_at"], t0), ""))
        rows += _steps(failback, t0)
        rows.append(("failback total", _t(failback["finished_at"], t0),
                     f"{failback['finished_at'] - failback['created_at']:.2f}s"))
        consistency = (failover["steps"].get("consistency") or {})
        self.say()
        self.say("summary")
        width = max(len(r[0]) for r in rows) + 2
        self.say(f"  {'':<{width}} {'at':>8}  {'took':>8}")
        for label, at, took in rows:
            self.say(f"  {label:<{width}} {at:>8}  {took:>8}")
        checked = consistency.get("summary") if consistency.get("state") == "done" else None
        self.say(f"  data-loss check: {checked or 'skipped (no database: nothing to lose in this demo)'}")
        self.say(f"  demo total: {time.monotonic() - self.started:.1f}s")

    async def keep_running(self, seconds: float | None) -> None:
        executor = self.voter("engine-azure")
        self.say()
        until = "until Ctrl-C" if seconds is None else f"for {seconds:g}s (Ctrl-C stops it earlier)"
        self.say(f"everything stays up {until}. Try:")
        self.say(f"  status page     {executor.url}/   (any user name; password {self.viewer})")
        self.say(f"  DNS             {self.dig()}")
        self.say(f"  status          failover-engine status --url {executor.url} --token {self.viewer}")
        self.say(f"  events          failover-engine events --url {executor.url} --token {self.viewer} --service "
                 f"{SERVICE}")
        self.say(f"  a switchover    failover-engine switchover {SERVICE} --reason 'trying it' --url {executor.url} "
                 f"--token {self.operator} --wait")
        self.say(f"  sample sites    {self.sites['gcp'].url}/health   {self.sites['azure'].url}/health")
        self.say(f"  configs, logs   {self.workdir}")
        if seconds is None:
            await asyncio.Event().wait()
        else:
            await asyncio.sleep(seconds)

    # -- teardown --------------------------------------------------------------------------------------
    async def cleanup(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.out.flush(everything=True)
        await asyncio.to_thread(concurrent.futures.wait, self._threads)  # setup still running after a Ctrl-C
        for future in self._threads:  # a part a setup thread started after the Ctrl-C that interrupted it
            part = None if future.cancelled() or future.exception() is not None else future.result()
            if self.dns is None and part is not None and hasattr(part, "zone_name"):
                self.dns = part
        await asyncio.to_thread(stop_voters, self.voters)
        await self.api.close()
        for site in self.sites.values():
            await site.stop()
        if self.dns is not None:
            await self.dns.stop()
        if self.db is not None:
            await asyncio.to_thread(self.db.stop)
        self._pool.shutdown(wait=True)
        if self.failed:
            print(f"the voters' configs, journals and logs are kept in {self.workdir}", flush=True)
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


async def _ready(value: bool) -> bool:
    return value


def _t(at: float | None, t0: float) -> str:
    return "" if at is None else f"t+{at - t0:.1f}s"


def _steps(op: dict[str, Any], t0: float) -> list[tuple[str, str, str]]:
    rows = []
    for name, step in sorted(op["steps"].items(), key=lambda item: item[1].get("started_at") or 0):
        state = str(step.get("state"))
        took = f"{float(step.get('duration_s') or 0):.2f}s" if state == "done" else state
        rows.append((f"  {name}", _t(step.get("finished_at"), t0), took))
    return rows


async def _main(seconds: float | None, keep_running: bool, dns_choice: str, database: bool) -> int:
    demo = Demo(dns_choice=dns_choice, database=database)
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    code = 0
    try:
        await demo.setup()
        demo.narrator = Narrator(demo.api, demo.voters, demo.out, cfg.THRESHOLD)
        await demo.steady()
        await demo.failover()
        await demo.failback()
        demo.summary()
        demo.completed = True
        if keep_running or seconds is not None:
            await demo.keep_running(seconds)
    except DemoFailed as exc:
        demo.failed, code = True, 1
        demo.out.flush(everything=True)
        print(f"\ndemo failed: {exc}", flush=True)
    except asyncio.CancelledError:
        task.uncancel()
        demo.out.flush(everything=True)
        print("\ninterrupted: stopping everything", flush=True)
        code = 0 if demo.completed else 130
    except Exception as exc:  # never a traceback for the user: say what broke, keep the logs
        demo.failed, code = True, 1
        demo.out.flush(everything=True)
        print(f"\ndemo failed: unexpected {type(exc).__name__}: {exc}", flush=True)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not interrupt the cleanup
            loop.add_signal_handler(sig, lambda: print("stopping, please wait", flush=True))
        with contextlib.suppress(Exception):
            await demo.cleanup()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    print("demo stopped: every part it started is stopped", flush=True)
    return code


def run(seconds: float | None = None, *, keep_running: bool = False, dns_choice: str = "auto",
        database: bool = True) -> int:
    """Run the demo; 0 when the story completed, 1 when something did not happen in time, 130 on Ctrl-C."""
    return asyncio.run(_main(seconds, keep_running, dns_choice, database))
