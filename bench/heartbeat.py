"""Heartbeat capacity benchmark (not a test; `make test` never runs it). See bench/README.md.

    .venv/bin/python bench/heartbeat.py --server run-prod      # the production shape (make run-prod)
    .venv/bin/python bench/heartbeat.py --server serve         # the embedded default (make run: SQLite)
    .venv/bin/python bench/heartbeat.py --server serve --db postgres   # the same server on PostgreSQL
    .venv/bin/python bench/heartbeat.py --server gunicorn      # run-prod's REST server alone (bench/quick.py)
    .venv/bin/python bench/heartbeat.py --rates 100,333 --seconds 5    # a quick check
    .venv/bin/python bench/heartbeat.py --instances 10000 --sites 100  # more instances (up to 100,000)

N instances (`--instances`, 500) in M sites (`--sites`, 20), each with its own instance token (what
register hands out and agents use), heartbeat at fixed offered rates in turn (`--rates`, `--seconds`
each, `--pause` apart): open loop, request i is due at start + i / rate whatever became of the earlier
ones, to instance i mod N, so every instance heartbeats once per N / rate seconds. The body is the
reference agent's (status, uptime, inventoryVersion, configVersion, three metrics). The client is one
asyncio process speaking HTTP/1.1 on keep-alive connections (a connection idle longer than the server
keeps it is not reused; `--new-connections`: one connection per heartbeat); it costs far less CPU than
the server, but shares the cores with it.

For each rate: the answers by status and the errors by kind, the 200s per second over the step's real
length, p50/p95/p99 of the 200s (from the moment the request was sent), how late the client sent them
(its own lag), and the CPU the server used: its processes (the server and everything it started) and,
on PostgreSQL, the backends of the benchmark's database, and the client's own, in ms per answered
heartbeat and in cores; the whole machine's busy share beside it (other work on the machine shows there;
Redis's share is not counted: it serves others too). Capacity is the highest rate whose step answered
everything 200, at p99 < 250 ms, at 95 % of the offered rate or more.

Servers (bench/common.py): `serve` is `manage.py serve` as `make run` starts it (the embedded default:
daphne, beat in a thread, SQLite in a directory of the run's own unless `--db postgres`); `run-prod` is
`manage.py run_prod` as `make run-prod` starts it (gunicorn with config.gunicorn.ThreadWorker, daphne, a
Celery worker and beat) on PostgreSQL and Redis (`--redis-url`, db 10 by default; the run's keys have a
prefix of their own, and its Celery queue a name of its own, deleted at the end); `gunicorn` is run-prod's
REST server alone (the same options and settings, Redis included), which is what answers heartbeats: it
starts in a second or two where run_prod takes about ten (migrate, collectstatic and four processes), so
bench/quick.py uses it.

Setup is in-process and fast (bulk inserts: 100,000 instances take seconds), not through register:
instances with their own tokens, then one leader per site elected by instances/election.py's health
check. Creates its own PostgreSQL database (promsnmp_heartbeat_<pid>), drops it at the end (also on
failure or Ctrl-C). Rate limits are set out of reach, and LOG_LEVEL is WARNING (as bench/overload.py:
no line per request). Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

from common import (
    ROOT,
    CpuMeter,
    capacity_per_s,
    database_url,
    delete_redis_keys,
    end_on_sigterm,
    load_average,
    machine,
    machine_line,
    own_database,
    rate_step_summary,
    server,
    settings_environment,
    write_report,
)

CAPACITY_P99_S = 0.25  # "R heartbeats/s at p99 < 250 ms" (issue 12)
CAPACITY_SHARE = 0.95  # of the offered rate, answered 200, for a step to count
KEEPALIVE_REUSE_S = 1.5  # gunicorn closes a connection idle for 2 s (--keep-alive): not reused after this


# --- the client: asyncio, HTTP/1.1, keep-alive ---------------------------------------------------------


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer
        self.idle_since = time.monotonic()
        self.used = False

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class ServerClosed(Exception):
    """A reused keep-alive connection was closed by the server before it answered."""


class Client:
    def __init__(self, host: str, port: int, *, keep_alive: bool, max_connections: int):
        self.host, self.port, self.keep_alive = host, port, keep_alive
        self.idle: list[Connection] = []
        self.slots = asyncio.Semaphore(max_connections)
        self.opened = 0

    async def _connection(self) -> Connection:
        while self.idle:
            conn = self.idle.pop()  # the most recently used first
            if time.monotonic() - conn.idle_since < KEEPALIVE_REUSE_S:
                return conn
            conn.close()
        reader, writer = await asyncio.open_connection(self.host, self.port)
        self.opened += 1
        return Connection(reader, writer)

    async def _exchange(self, conn: Connection, request: bytes) -> tuple[int, bytes]:
        conn.writer.write(request)
        await conn.writer.drain()
        try:
            head = await conn.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if conn.used and not exc.partial:
                raise ServerClosed from exc
            raise
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int((await conn.reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
                chunk = await conn.reader.readexactly(size + 2)
                if size == 0:
                    break
                body += chunk[:-2]
        else:
            body = await conn.reader.readexactly(int(headers.get("content-length", "0")))
        if not self.keep_alive or headers.get("connection", "").lower() == "close":
            conn.close()
        else:
            conn.used, conn.idle_since = True, time.monotonic()
            self.idle.append(conn)
        return status, body

    async def post(self, request: bytes) -> tuple[int, bytes]:
        async with self.slots:
            conn = await self._connection()
            try:
                return await self._exchange(conn, request)
            except ServerClosed:
                conn.close()  # it timed out on the server's side just now: once more, on a new one
                return await self._exchange(await self._connection(), request)
            except BaseException:
                conn.close()
                raise


def heartbeat_request(host: str, instance_id: str, token: str, keep_alive: bool, index: int) -> bytes:
    """What the reference agent (agent/runner.py) sends."""
    body = json.dumps(
        {
            "status": "healthy",
            "uptime": 3600 + index,
            "inventoryVersion": 1,
            "configVersion": 1,
            "metrics": {"discoveryRuns": 0, "devicesMonitored": 120, "queuedBatches": 0},
        },
        separators=(",", ":"),
    ).encode()
    head = (
        f"POST /api/v1/instances/{instance_id}/heartbeat HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    )
    return head.encode() + body


async def drive(
    client: Client, requests: list[bytes], *, rate: float, seconds: float, timeout: float
) -> list[tuple[str, float, float, float]]:
    """Open loop at `rate`/s for `seconds`: [(status or error name, latency_s, lag_s, answered_at_s)]."""
    total = int(rate * seconds)
    results: list[tuple[str, float, float, float]] = []
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.2

    async def one(index: int, due: float) -> None:
        sent = loop.time()
        try:
            status, body = await asyncio.wait_for(client.post(requests[index % len(requests)]), timeout)
            outcome, latency = str(status), loop.time() - sent
            if status == 200 and b'"status":"ok"' not in body:
                outcome = "200-bad-body"
        except TimeoutError:
            outcome, latency = "timeout", timeout
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            outcome, latency = type(exc).__name__, loop.time() - sent
        results.append((outcome, latency, sent - due, sent + latency - start))

    tasks = []
    for index in range(total):
        due = start + index / rate
        if (delay := due - loop.time()) > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(index, due)))
    await asyncio.gather(*tasks)
    return results


def summarise(rate: float, results: list[tuple[str, float, float, float]], cpu: dict) -> dict:
    """The step's figures (common.rate_step_summary), its CPU, and whether it counts for capacity."""
    row = {**rate_step_summary(rate, results), **cpu}
    answered = row["statuses"].get("200") or 1
    row["server_cpu_ms_per_heartbeat"] = round(1000 * cpu["server_cpu_s"] / answered, 2)
    row["database_cpu_ms_per_heartbeat"] = round(1000 * cpu["database_cpu_s"] / answered, 2)
    row["client_cpu_ms_per_heartbeat"] = round(1000 * cpu["client_cpu_s"] / answered, 2)
    row["server_cores"] = round(cpu["server_cpu_s"] / cpu["seconds"], 2)
    row["database_cores"] = round(cpu["database_cpu_s"] / cpu["seconds"], 2)
    row["meets"] = bool(
        row["ok_p99_ms"] is not None
        and set(row["statuses"]) == {"200"}
        and row["ok_p99_ms"] < CAPACITY_P99_S * 1000
        and row["ok_per_s"] >= CAPACITY_SHARE * rate
    )
    return row


# --- setup -------------------------------------------------------------------------------------------


def populate(instances: int, sites: int) -> list[tuple[str, str]]:
    """Sites, instances with their own tokens (as register issues them), a leader per site. In-process,
    with bulk inserts. [(instance id, token plaintext)]."""
    from django.db import transaction
    from django.utils import timezone

    from core.audit import Actor
    from core.authentication import hash_token
    from core.ids import new_id
    from core.models import ApiToken, Scope
    from core.services import TOKEN_PREFIX
    from instances import election
    from instances.models import Instance
    from sites.services import site_create

    actor = Actor.command("bench")
    site_ids = [f"bench-site-{n:03d}" for n in range(sites)]
    for site_id in site_ids:
        site_create(actor=actor, site_id=site_id, values={"label": site_id})
    now = timezone.now()
    pairs, rows, tokens = [], [], []
    for n in range(instances):
        site_id = site_ids[n % sites]
        instance_id, plaintext = new_id("inst"), TOKEN_PREFIX + secrets.token_urlsafe(32)
        rows.append(
            Instance(
                id=instance_id,
                site_id=site_id,
                hostname=f"collector-{n:06d}",
                last_heartbeat=now,
                config_version_sent=1,  # what register hands out: the site's first configVersion
            )
        )
        tokens.append(
            ApiToken(
                id=new_id("tok"),
                name=f"instance {instance_id} (collector-{n:06d})",
                token_hash=hash_token(plaintext),
                prefix=plaintext[:12],
                scopes=[Scope.INSTANCE],
                site_id=site_id,
                instance_id=instance_id,
                created_by=str(actor),
            )
        )
        pairs.append((instance_id, plaintext))
    with transaction.atomic():
        Instance.objects.bulk_create(rows, batch_size=2000)
        ApiToken.objects.bulk_create(tokens, batch_size=2000)
    election.leader_health_check(actor=actor)  # one leader per site, as a first heartbeat would elect
    assert Instance.objects.filter(is_leader=True).count() == sites
    return pairs


def run(args: argparse.Namespace, database: str | None, var_dir: Path) -> tuple[dict, dict]:
    prefix = f"bench-hb-{os.getpid()}"
    settings_env = {
        **settings_environment(var_dir),
        "RATE_LIMIT_PER_TOKEN": "100000000/min",
        "RATE_LIMIT_REGISTER_PER_SITE": "100000000/min",
    }
    if database:
        settings_env["DATABASE_URL"] = database_url(database)
    else:
        os.environ.pop("DATABASE_URL", None)  # the embedded default: SQLite under VAR_DIR
    os.environ.update(settings_env)
    os.environ.pop("REDIS_URL", None)  # the setup publishes nothing to anyone's Redis
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connections

    call_command("migrate", verbosity=0)
    started = time.monotonic()
    pairs = populate(args.instances, args.sites)
    setup_s = round(time.monotonic() - started, 1)
    print(f"{args.instances} instances in {args.sites} sites ready in {setup_s} s", file=sys.stderr)
    for connection in connections.all():
        connection.close()

    env = dict(os.environ)
    if args.server != "serve":  # run-prod, and gunicorn with the production shape's settings
        env.update(
            {
                "REDIS_URL": args.redis_url,
                "CELERY_QUEUE": prefix,
                "CHANNEL_LAYER_PREFIX": prefix,
                "THROTTLE_CACHE_PREFIX": prefix,
            }
        )
    processes: list = []
    kind = "embedded" if args.server == "serve" else args.server
    rows = []
    try:
        with server(kind, env, var_dir / f"{args.server}.log", processes) as base:
            port = int(base.rsplit(":", 1)[1])
            host = f"127.0.0.1:{port}"
            keep_alive = not args.new_connections
            requests = [
                heartbeat_request(host, instance_id, token, keep_alive, n)
                for n, (instance_id, token) in enumerate(pairs)
            ]
            meter = CpuMeter([processes[0].pid], database)
            rows = asyncio.run(steps(args, host, port, requests, meter))
    finally:
        if args.server != "serve":
            delete_redis_keys(args.redis_url, prefix)
    results = {"rates": rows, "capacity_per_s": capacity_per_s(rows)}
    return results, {"setup_s": setup_s}


async def steps(args, host: str, port: int, requests: list[bytes], meter: CpuMeter) -> list[dict]:
    client = Client("127.0.0.1", port, keep_alive=not args.new_connections, max_connections=args.connections)
    # A warm-up at the first rate (every instance once, `--warm-up` s at most): connections open,
    # processes warm.
    warm_s = min(len(requests) / args.rates[0], args.warm_up)
    await drive(client, requests, rate=args.rates[0], seconds=warm_s, timeout=30)
    rows = []
    for rate in args.rates:
        await asyncio.sleep(args.pause)  # the last requests drain before the next rate
        meter.start()
        outcome = await drive(client, requests, rate=rate, seconds=args.seconds, timeout=args.timeout)
        row = summarise(rate, outcome, meter.stop())
        rows.append(row)
        print(
            f"{args.server} {rate:>6.0f}/s: 200/s {row['ok_per_s']}, p50/p95/p99 {row['ok_p50_ms']}/"
            f"{row['ok_p95_ms']}/{row['ok_p99_ms']} ms, {row['statuses']}, server "
            f"{row['server_cpu_ms_per_heartbeat']} ms/hb + db {row['database_cpu_ms_per_heartbeat']} + "
            f"client {row['client_cpu_ms_per_heartbeat']}, "
            f"machine busy {row['machine_busy_share']}, lag p99 {row['client_lag_p99_ms']} ms",
            file=sys.stderr,
        )
    for conn in client.idle:
        conn.close()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--server",
        choices=("serve", "run-prod", "gunicorn"),
        default="run-prod",
        help="run-prod (the production shape), serve (the embedded default), or gunicorn: run-prod's REST "
        "server alone, which answers the heartbeats (with its settings: PostgreSQL, Redis), starting in "
        "seconds for quick runs",
    )
    parser.add_argument(
        "--db", choices=("sqlite", "postgres"), help="serve only: sqlite (the default's) or postgres"
    )
    parser.add_argument("--rates", default="100,200,333,400,500", help="offered heartbeats/s, in turn")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds at each rate (10)")
    parser.add_argument("--pause", type=float, default=3.0, help="seconds between rates (3)")
    parser.add_argument("--warm-up", type=float, default=5.0, help="seconds of warm-up at most (5)")
    parser.add_argument("--instances", type=int, default=500, help="instances (500; at most 100,000)")
    parser.add_argument("--sites", type=int, default=20, help="sites the instances are spread over (20)")
    parser.add_argument("--timeout", type=float, default=5.0, help="client timeout, seconds (5)")
    parser.add_argument("--connections", type=int, default=512, help="client connections at most (512)")
    parser.add_argument("--new-connections", action="store_true", help="one connection per heartbeat")
    parser.add_argument(
        "--redis-url", default="redis://127.0.0.1:6379/10", help="run-prod: the Redis (db 10 by default)"
    )
    parser.add_argument("--out", metavar="FILE", help="results JSON (bench/results/heartbeat-<date>-….json)")
    args = parser.parse_args()
    args.rates = [float(r) for r in args.rates.split(",")]
    if not 1 <= args.instances <= 100_000 or not 1 <= args.sites <= args.instances:
        parser.error("--instances must be 1 to 100,000, --sites 1 to --instances")
    if args.server != "serve" and args.db == "sqlite":
        parser.error(f"{args.server} runs on PostgreSQL")
    args.db = args.db or ("sqlite" if args.server == "serve" else "postgres")

    end_on_sigterm()
    started_at = dt.datetime.now(dt.UTC)
    info = machine()
    info["load_average_before"] = load_average()
    with tempfile.TemporaryDirectory(prefix="promsnmp-heartbeat-") as tmp:
        if args.db == "postgres":
            with own_database("promsnmp_heartbeat") as database:
                results, extra = run(args, database, Path(tmp))
        else:
            results, extra = run(args, None, Path(tmp))
    info["load_average_after"] = load_average()
    suffix = f"-{args.server}" + ("-postgres" if args.server == "serve" and args.db == "postgres" else "")
    out = write_report(
        benchmark="heartbeat",
        started_at=started_at,
        info=info,
        parameters={k: v for k, v in vars(args).items() if k != "out"},
        extra={"capacity_p99_s": CAPACITY_P99_S, "capacity_share": CAPACITY_SHARE, **extra},
        results=results,
        suffix=suffix,
        out=args.out,
    )
    load = f"{info['load_average_before'][0]:.1f} → {info['load_average_after'][0]:.1f}"
    print(f"\n{machine_line(info)}, load average {load}")
    print(f"{args.server} on {args.db}, {args.instances} instances in {args.sites} sites")
    columns = ("offered/s", "200/s", "p50", "p95", "p99", "errors", "srv ms/hb", "db ms/hb", "cli ms/hb")
    columns += ("srv cores", "busy")
    widths = (9, 7, 7, 7, 7, 7, 9, 8, 9, 9, 5)
    print(" ".join(f"{name:>{width}}" for name, width in zip(columns, widths, strict=True)))
    for row in results["rates"]:
        errors = sum(n for status, n in row["statuses"].items() if status != "200")
        values = (
            f"{row['offered_per_s']:.0f}",
            row["ok_per_s"],
            row["ok_p50_ms"],
            row["ok_p95_ms"],
            row["ok_p99_ms"],
            errors,
            row["server_cpu_ms_per_heartbeat"],
            row["database_cpu_ms_per_heartbeat"],
            row["client_cpu_ms_per_heartbeat"],
            row["server_cores"],
            row["machine_busy_share"],
        )
        print(" ".join(f"{value!s:>{width}}" for value, width in zip(values, widths, strict=True)))
    capacity = results["capacity_per_s"]
    print(f"capacity: {capacity:.0f} heartbeats/s at p99<250ms" if capacity else "capacity: none of these")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
