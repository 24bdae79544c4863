"""Past one machine: what a heartbeat and an event cost at 10k / 100k / 1M instances, measured on this
machine, and the model of docs/scaling.md fed with those costs (not a test; `make test` never runs it).

    .venv/bin/python bench/scaling.py                            # 10,000 and 100,000 instances, 2,000 sockets
    .venv/bin/python bench/scaling.py --sizes 10000,100000,1000000 --sockets 4000
    .venv/bin/python bench/scaling.py --sizes 2000 --beats 1000 --sockets 200   # a quick check

Two measurements, then the model:

1. **PostgreSQL per heartbeat**, at each size of `--sizes` (instances, 5 per site, one leader each,
   created in bulk): `--beats` heartbeats through the code the API runs (`instances.services.
   _heartbeat_write`: the `UPDATE … RETURNING` in autocommit, one commit each) to random instances, and
   four times as many rows written in batches of `--batch` by one `UPDATE … FROM (VALUES …)` per batch
   (the design of docs/scaling.md: heartbeats absorbed elsewhere, written in batches). For each: the
   backend's CPU (from /proc) and this process's CPU per row, and the WAL of a sample of the same
   statements from `EXPLAIN (ANALYZE, WAL)` (the server is shared: the WAL position moves with other
   databases' writes too). The index on `last_heartbeat`, when present, is measured as it is.
2. **Sockets and events per daphne process**: one `manage.py serve --no-beat` on PostgreSQL with the
   Redis channel layer (as the production shape's WebSocket servers), `--sockets` instance sockets held
   by two client processes (5 instances per site, a site-bound instance token per site): the server's
   RSS per socket, its CPU while the sockets sit idle, and its CPU per delivered event when
   `--events` events are sent to every site's group through the channel layer (what core.events'
   relay does after a commit).

The model (`model()`) multiplies the measured costs by the rates of 10k / 100k / 1M instances (a
heartbeat every HEARTBEAT_INTERVAL_SECONDS, 30 s; one inventory event per site every `--event-every`
seconds) and prints the cores and bytes each tier needs; docs/scaling.md reads it. Results:
bench/results/scaling-<date>.json. Creates its own PostgreSQL database (dropped at the end, also on
failure or Ctrl-C) and Redis keys with a prefix of the run's own. Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import multiprocessing
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from common import (
    CLK_TCK,
    ROOT,
    CpuMeter,
    _ticks,
    database_url,
    delete_redis_keys,
    end_on_sigterm,
    machine,
    own_database,
    server,
    settings_environment,
    write_report,
)

SITE_SIZE = 5  # instances per site: a few collectors per POP
HEARTBEAT_INTERVAL_S = 30  # the spec's default
MODEL_SIZES = (10_000, 100_000, 1_000_000)
CHECKPOINT_TIMEOUT_S = 300  # PostgreSQL's default checkpoint_timeout
PING_SPREAD_S = 4.0  # the sockets' ping frames are sent over this long (not a burst)
WAL_SAMPLE = 300  # heartbeats whose WAL EXPLAIN (ANALYZE, WAL) reads
BATCHED_ROUNDS = 4  # the batched rows: this many times --beats (CPU is read from /proc in 10 ms ticks)


# --- 1. PostgreSQL per heartbeat -----------------------------------------------------------------------


def grow_to(size: int, have: int) -> None:
    """Instances up to `size`, 5 per site (new sites as needed), in bulk and in-process.

    Written as the elections leave them (the site's first instance leads, term 1) rather than by
    instances/election.py's health check as bench/heartbeat.py does: that elects site by site, about
    30 ms each, most of an hour for the 200,000 sites of a million instances. Nothing here changes a
    leadership afterwards."""
    from django.db import connection, transaction
    from django.utils import timezone

    from instances.models import Instance
    from sites.models import Site

    now = timezone.now()
    for start in range(have, size, 50_000):  # in slices: a million model objects at once is gigabytes
        stop = min(size, start + 50_000)
        sites = [
            Site(id=f"scale-{n:07d}", label=f"scale {n}", leader_term=1, discovery_enabled=True)
            for n in range(start // SITE_SIZE, stop // SITE_SIZE)
        ]
        instances = [
            Instance(
                id=f"inst-scale-{n:08d}",
                site_id=f"scale-{n // SITE_SIZE:07d}",
                hostname=f"collector-{n:08d}",
                is_leader=n % SITE_SIZE == 0,
                leader_since=now if n % SITE_SIZE == 0 else None,
                last_heartbeat=now,
                config_version_sent=1,
            )
            for n in range(start, stop)
        ]
        with transaction.atomic():
            Site.objects.bulk_create(sites, batch_size=5000)
            Instance.objects.bulk_create(instances, batch_size=5000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE instances, sites")  # autovacuum is off on the development servers


def backend_ticks(cursor) -> int:
    """This connection's backend CPU, in ticks."""
    cursor.execute("SELECT pg_backend_pid()")
    return _ticks(cursor.fetchone()[0]) or 0


def explained_wal(cursor, sql: str, params: list) -> tuple[int, int]:
    """(WAL bytes, full-page images) the statement wrote, from EXPLAIN (ANALYZE, WAL): this statement's
    own, whatever else the shared server writes meanwhile (pg_current_wal_lsn() would count that too)."""
    cursor.execute("EXPLAIN (ANALYZE, WAL, FORMAT JSON) " + sql, params)
    plan = cursor.fetchone()[0]
    plan = (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]
    return plan.get("WAL Bytes", 0), plan.get("WAL FPI", 0)


def heartbeat_costs(size: int, beats: int, batch: int) -> dict:
    """CPU per row of the API's heartbeat statement and of batched writes; their WAL from a sample."""
    from django.db import connection
    from django.utils import timezone

    from instances.models import Instance
    from instances.services import HEARTBEAT_SQL, _heartbeat_write

    ids = [f"inst-scale-{n:08d}" for n in random.sample(range(size), min(beats, size))]
    ids = (ids * (beats // len(ids) + 1))[:beats]
    metrics = {"devices": 120, "scrapeSeconds": 1.5, "errors": 0}
    values = {
        "reported_status": "UP",
        "uptime": 3600,
        "inventory_version": 7,
        "config_version": 1,
        "metrics": metrics,
    }
    out: dict = {"instances": size}
    with connection.cursor() as cursor:
        backend_ticks(cursor)  # connect outside the timing
    # Twice over the same rows: the first pass reads pages from disk and cache misses that a server writing
    # every row twice a minute does not have; the second is that steady state.
    for label in ("single_first_touch", "single"):
        with connection.cursor() as cursor:
            ticks = backend_ticks(cursor)
        client, started = time.process_time(), time.perf_counter()
        for instance_id in ids:
            if _heartbeat_write(instance_id, None, {"last_heartbeat": timezone.now(), **values}) is None:
                raise RuntimeError(f"no instance {instance_id}")
        elapsed, client = time.perf_counter() - started, time.process_time() - client
        with connection.cursor() as cursor:
            ticks = backend_ticks(cursor) - ticks
        out[label] = _per_row(beats, ticks, client, elapsed)
    # WAL: the records of statements that wrote no full-page image (a page's first change after a
    # checkpoint, which other databases' writes on this shared server bring at any moment); the images are
    # counted apart. docs/scaling.md adds them back as the relation's size once per checkpoint.
    sample = ids[:WAL_SAMPLE]
    metrics_param = Instance._meta.get_field("metrics").get_db_prep_value(metrics, connection)
    record_bytes, plain, images = 0, 0, 0
    with connection.cursor() as cursor:
        for instance_id in sample:
            params = [timezone.now(), "UP", 3600, 7, 1, metrics_param, instance_id, None]
            written, fpi = explained_wal(cursor, HEARTBEAT_SQL, params)
            images += fpi
            if not fpi:
                record_bytes, plain = record_bytes + written, plain + 1
    out["single"]["wal_bytes_per_row"] = round(record_bytes / max(plain, 1))
    out["single"]["wal_full_page_images_per_row"] = round(images / len(sample), 3)

    body = json.dumps(metrics)
    statement_head = (
        "UPDATE instances AS i SET last_heartbeat = v.ts, reported_status = v.status, uptime = v.uptime,"
        " metrics = v.metrics FROM (VALUES "
    )
    statement_tail = ") AS v(id, ts, status, uptime, metrics) WHERE i.id = v.id"
    row_sql = "(%s, %s::timestamptz, %s, %s::bigint, %s::jsonb)"

    def batch_statement(chunk: list[str]) -> tuple[str, list]:
        now = timezone.now()
        params = [value for instance_id in chunk for value in (instance_id, now, "UP", 3600, body)]
        return statement_head + ", ".join([row_sql] * len(chunk)) + statement_tail, params

    batched_ids = ids * BATCHED_ROUNDS  # a batch costs a few ms: more rows than single beats, for resolution
    with connection.cursor() as cursor:
        ticks = backend_ticks(cursor)
        client, started = time.process_time(), time.perf_counter()
        for start in range(0, len(batched_ids), batch):
            chunk = batched_ids[start : start + batch]
            cursor.execute(*batch_statement(chunk))
            if cursor.rowcount != len(set(chunk)):
                raise RuntimeError(f"batch wrote {cursor.rowcount} of {len(set(chunk))} rows")
        elapsed, client = time.perf_counter() - started, time.process_time() - client
        ticks = backend_ticks(cursor) - ticks
        out["batched"] = {"batch": batch, **_per_row(len(batched_ids), ticks, client, elapsed)}
        # Two batches: the first may meet pages not yet changed since a checkpoint, the second does not.
        explained_wal(cursor, *batch_statement(ids[:batch]))
        written, images = explained_wal(cursor, *batch_statement(ids[:batch]))
    rows = len(set(ids[:batch]))
    out["batched"]["wal_bytes_per_row"] = round(written / rows)
    out["batched"]["wal_full_page_images_per_row"] = round(images / rows, 3)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_total_relation_size('instances')")
        out["instances_relation_mib"] = round(cursor.fetchone()[0] / 2**20, 1)
    return out


def _per_row(rows: int, ticks: int, client_s: float, elapsed_s: float) -> dict:
    return {
        "rows": rows,
        "backend_cpu_ms_per_row": round(ticks / CLK_TCK * 1000 / rows, 4),
        "client_cpu_ms_per_row": round(client_s * 1000 / rows, 4),
        "elapsed_ms_per_row": round(elapsed_s * 1000 / rows, 4),
    }


# --- 3. Beat entries per site ---------------------------------------------------------------------------


def schedule_costs(sites: int) -> dict:
    """What the per-site beat entries cost: `sync_schedules`' discovery part (run by every server start and
    by the migrate job) the first time and again (the repair that finds nothing to do), and beat's
    DatabaseScheduler reading every enabled entry (it does on start and after every schedule change)."""
    from django_celery_beat.models import PeriodicTask
    from django_celery_beat.schedulers import DatabaseScheduler

    from config.celery import app as celery_app
    from discovery.schedules import discovery_schedules_sync

    timings = {}
    for label in ("sync_first_s", "sync_again_s"):
        started = time.perf_counter()
        summary = discovery_schedules_sync()
        timings[label] = time.perf_counter() - started
    if summary["sites"] != sites:
        raise RuntimeError(f"synced {summary['sites']} sites, expected {sites}")
    scheduler = DatabaseScheduler(app=celery_app, lazy=True)
    started = time.perf_counter()
    entries = scheduler.all_as_schedule()
    load_s = time.perf_counter() - started
    stored = PeriodicTask.objects.count()
    return {
        "sites": sites,
        "beat_entries": stored,
        # django-celery-beat reads only the entries that may be due soon; the query still weighs them all.
        "beat_entries_loaded": len(entries),
        "beat_load_s": round(load_s, 3),
        "sync_first_ms_per_site": round(timings["sync_first_s"] * 1000 / sites, 3),
        "sync_again_ms_per_site": round(timings["sync_again_s"] * 1000 / sites, 3),
        "beat_load_ms_per_stored_entry": round(load_s * 1000 / stored, 4),
    }


# --- 2. Sockets and events per daphne process ----------------------------------------------------------


def client_process(urls: list[str], pipe) -> None:
    asyncio.run(_hold(urls, pipe))


async def _hold(urls: list[str], pipe) -> None:
    """Hold one socket per URL; count the events read; answer ("count",) and ("stop",) from the parent."""
    from websockets.asyncio.client import connect

    received = pongs = 0
    opened = asyncio.Semaphore(25)
    sockets: list = []
    failures: list[str] = []

    async def hold(url: str) -> None:
        nonlocal received, pongs
        async with opened:
            socket = await connect(url, open_timeout=120, max_size=None, ping_interval=None)
        sockets.append(socket)
        try:
            async for message in socket:
                if '"inventory_updated"' in message:
                    received += 1
                elif '"pong"' in message:
                    pongs += 1
        except Exception as error:
            failures.append(repr(error))
        else:
            failures.append(f"closed {socket.close_code} {socket.close_reason!r}")

    tasks = [asyncio.create_task(hold(url)) for url in urls]
    while len(sockets) < len(urls):
        failed = [task for task in tasks if task.done() and task.exception()]
        if failed:
            pipe.send(("error", repr(failed[0].exception())))
            return
        await asyncio.sleep(0.05)
    pipe.send(("ready", len(sockets)))
    loop = asyncio.get_running_loop()
    while True:
        command = await loop.run_in_executor(None, pipe.recv)
        if command[0] == "stop":
            break
        if command[0] == "ping":  # one ping frame on every socket, spread over `seconds`
            seconds = command[1]
            for n, socket in enumerate(sockets):
                await socket.send('{"type":"ping"}')
                if n % 50 == 49:
                    await asyncio.sleep(seconds * 50 / len(sockets))
        pipe.send(("count", received, pongs, list(failures)))
    for socket in sockets:
        await socket.close()


async def send_events(sites: list[str], rounds: int) -> None:
    """`rounds` inventory_updated events to every site's group, through the channel layer, as core.events'
    relay sends them after a commit. One event loop: channels-redis keeps a connection pool per loop."""
    from channels.layers import get_channel_layer

    from core.events import site_group

    layer = get_channel_layer()
    for n in range(rounds):
        for site_id in sites:
            event = {
                "type": "inventory_updated",
                "timestamp": dt.datetime.now(dt.UTC).isoformat(),
                "siteId": site_id,
                "payload": {"version": n + 2, "previousVersion": n + 1, "added": 0, "updated": 1},
                "seq": n + 2,
            }
            await layer.group_send(site_group(site_id), {"type": "event.message", "event": event})
    await layer.close_pools()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def socket_costs(args: argparse.Namespace, database: str, var_dir: Path, prefix: str) -> dict:
    from django.db import connections

    from core.audit import Actor
    from core.services import token_create

    sites = [f"scale-{n:07d}" for n in range(args.sockets // SITE_SIZE)]
    actor = Actor.command("bench")
    urls_by_site = {}
    for number, site_id in enumerate(sites):
        _, token = token_create(actor=actor, name=f"bench {site_id}", scopes=["instance"], site_id=site_id)
        members = range(number * SITE_SIZE, (number + 1) * SITE_SIZE)
        urls_by_site[site_id] = [f"?instanceId=inst-scale-{n:08d}&token={token}" for n in members]
    for connection in connections.all():
        connection.close()
    processes: list = []
    with server("serve", dict(os.environ), var_dir / "daphne.log", processes) as base:
        daphne = processes[0].pid
        time.sleep(2)
        idle_rss = rss_kib(daphne)
        ws = f"ws{base.removeprefix('http')}/api/v1/ws"
        urls = [ws + query for site_id in sites for query in urls_by_site[site_id]]
        meter = CpuMeter([daphne], database)
        meter.start()  # the sockets' opening: what a reconnect storm costs per socket
        context = multiprocessing.get_context("spawn")
        pipes, clients = [], []
        for part in range(2):
            parent_end, child_end = context.Pipe()
            client = context.Process(target=client_process, args=(urls[part::2], child_end))
            client.start()
            pipes.append(parent_end)
            clients.append(client)
        try:
            started = time.perf_counter()
            for pipe in pipes:
                kind, detail = pipe.recv()
                if kind != "ready":
                    raise RuntimeError(f"a client process could not connect: {detail}")
            connect_s = time.perf_counter() - started
            connecting = meter.stop()
            time.sleep(3)
            held_rss = rss_kib(daphne)
            meter.start()
            time.sleep(args.idle_seconds)
            idle = meter.stop()

            meter.start()
            asyncio.run(send_events(sites, args.events))
            expected = args.events * len(urls)
            deadline = time.monotonic() + 120
            while True:
                got, failures = 0, []
                for pipe in pipes:
                    pipe.send(("count",))
                    _, count, _, failed = pipe.recv()
                    got += count
                    failures += failed
                if got >= expected or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            sending = meter.stop()

            # A ping frame on every socket, spread over PING_SPREAD_S: what a heartbeat carried by the socket
            # the instance holds anyway would cost (the consumer's ping writes last_heartbeat, after checking
            # the token: instances.services.instance_seen).
            meter.start()
            for pipe in pipes:
                pipe.send(("ping", PING_SPREAD_S))
            pongs, deadline = 0, time.monotonic() + 120
            for pipe in pipes:
                pipe.recv()
            while pongs < len(urls) and time.monotonic() < deadline:
                pongs = 0
                for pipe in pipes:
                    pipe.send(("count",))
                    pongs += pipe.recv()[2]
                time.sleep(0.2)
            pinging = meter.stop()
            for pipe in pipes:
                pipe.send(("stop",))
        finally:
            for client in clients:
                client.join(timeout=30)
                if client.is_alive():
                    client.kill()
    return {
        "sockets": len(urls),
        "sites": len(sites),
        "connect_all_s": round(connect_s, 2),
        "server_cpu_ms_per_connect": round(connecting["server_cpu_s"] * 1000 / len(urls), 3),
        "database_cpu_ms_per_connect": round(connecting["database_cpu_s"] * 1000 / len(urls), 3),
        "rss_idle_mib": round(idle_rss / 1024, 1),
        "rss_with_sockets_mib": round(held_rss / 1024, 1),
        "rss_kib_per_socket": round((held_rss - idle_rss) / len(urls), 1),
        "idle_seconds": idle["seconds"],
        "idle_cores": round(idle["server_cpu_s"] / idle["seconds"], 4),
        "events_sent": args.events * len(sites),
        "events_expected": expected,
        "events_delivered": got,
        "socket_failures": failures[:5],
        "delivery_seconds": sending["seconds"],
        "server_cpu_ms_per_delivered_event": round(sending["server_cpu_s"] * 1000 / max(got, 1), 4),
        "machine_busy_share": sending["machine_busy_share"],
        "pongs": pongs,
        "server_cpu_ms_per_ping": round(pinging["server_cpu_s"] * 1000 / max(pongs, 1), 4),
        "database_cpu_ms_per_ping": round(pinging["database_cpu_s"] * 1000 / max(pongs, 1), 4),
    }


# --- the model -----------------------------------------------------------------------------------------


def model(measured: dict, heartbeat_server_ms: float, event_every_s: float) -> list[dict]:
    """Cores and rates at 10k / 100k / 1M instances from the measured costs (docs/scaling.md).

    `heartbeat_server_ms`: the API server's CPU per heartbeat (bench/heartbeat.py, run-prod), the part
    that runs in stateless processes and scales out with them."""
    sockets = measured.get("sockets")
    rows = []
    for size in MODEL_SIZES:
        # The costs measured at this size, or at the nearest size below it (then the table scaled to it).
        nearest = max(
            (row for row in measured["postgres"] if row["instances"] <= size),
            key=lambda row: row["instances"],
            default=min(measured["postgres"], key=lambda row: row["instances"]),
        )
        single, batched = nearest["single"], nearest["batched"]
        relation_mib = nearest["instances_relation_mib"] * size / nearest["instances"]
        # Every page of the table and its indexes changes between two checkpoints: one full-page image each.
        images_mib_per_s = relation_mib / CHECKPOINT_TIMEOUT_S
        rate = size / HEARTBEAT_INTERVAL_S
        # A change per site every event_every_s, delivered to each of its sockets: one per instance.
        events_per_s = size / event_every_s
        row = {
            "instances": size,
            "heartbeats_per_s": round(rate),
            "api_cores": round(rate * heartbeat_server_ms / 1000, 2),
            "postgres_cores_single": round(rate * single["backend_cpu_ms_per_row"] / 1000, 2),
            "postgres_commits_per_s_single": round(rate),
            "costs_measured_at": nearest["instances"],
            "wal_mib_per_s_single": round(rate * single["wal_bytes_per_row"] / 2**20 + images_mib_per_s, 2),
            "postgres_cores_batched": round(rate * batched["backend_cpu_ms_per_row"] / 1000, 3),
            "wal_mib_per_s_batched": round(rate * batched["wal_bytes_per_row"] / 2**20 + images_mib_per_s, 2),
            "delivered_events_per_s": round(events_per_s, 1),
        }
        if schedules := measured.get("schedules"):
            sites = size / SITE_SIZE
            row["sync_schedules_at_start_s"] = round(sites * schedules["sync_again_ms_per_site"] / 1000)
            row["beat_load_s"] = round(sites * schedules["beat_load_ms_per_stored_entry"] / 1000, 1)
        if sockets:
            per_event_ms = sockets["server_cpu_ms_per_delivered_event"]
            row["ws_cores_events"] = round(events_per_s * per_event_ms / 1000, 3)
            row["ws_cores_idle"] = round(size / sockets["sockets"] * sockets["idle_cores"], 3)
            row["ws_rss_gib"] = round(size * sockets["rss_kib_per_socket"] / 2**20, 2)
            # The next step's heartbeat: a frame on the socket the instance holds anyway.
            row["ws_cores_heartbeat_on_socket"] = round(rate * sockets["server_cpu_ms_per_ping"] / 1000, 2)
            row["postgres_cores_heartbeat_on_socket"] = round(
                rate * sockets["database_cpu_ms_per_ping"] / 1000, 2
            )
            # Every socket reconnecting within a minute (a socket tier restarted at once).
            row["reconnect_storm_cores_per_minute"] = round(
                size * sockets["server_cpu_ms_per_connect"] / 1000 / 60, 2
            )
        rows.append(row)
    return rows


def latest_heartbeat_server_ms() -> tuple[float, str]:
    """The API's CPU per heartbeat from the newest run-prod heartbeat result at 10,000 instances or more."""
    results = sorted((ROOT / "bench" / "results").glob("heartbeat-*run-prod*.json"))
    best: tuple[float, str] | None = None
    for path in results:
        report = json.loads(path.read_text())
        if report["parameters"].get("instances", 0) < 10_000:
            continue
        served = [row for row in report["results"]["rates"] if row.get("meets")]
        if served:
            best = (served[0]["server_cpu_ms_per_heartbeat"], path.name)
    if best is None:
        raise RuntimeError("no run-prod heartbeat result at 10,000 instances: run bench/heartbeat.py first")
    return best


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000", help="instances, comma-separated, ascending")
    parser.add_argument("--beats", type=int, default=5000, help="heartbeats (and batched rows) per size")
    parser.add_argument("--batch", type=int, default=1000, help="rows per batched UPDATE")
    parser.add_argument("--sockets", type=int, default=2000, help="sockets held on one daphne (0: skip)")
    parser.add_argument("--events", type=int, default=5, help="events sent to every site's group")
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument(
        "--event-every", type=float, default=300.0, help="the model: seconds between a site's events"
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/10")
    parser.add_argument("--out", help="the JSON report's path (default bench/results/scaling-<date>.json)")
    args = parser.parse_args()
    sizes = sorted(int(value) for value in args.sizes.split(","))
    if args.sockets > sizes[-1]:
        parser.error("--sockets must not exceed the largest of --sizes")
    end_on_sigterm()
    started_at = dt.datetime.now(dt.UTC)
    info = machine()
    info["load_average_before"] = list(os.getloadavg())
    prefix = f"bench-scaling-{os.getpid()}"
    measured: dict = {"postgres": []}
    with own_database("promsnmp_scaling") as database, tempfile.TemporaryDirectory() as var_dir:
        os.environ.update(
            {
                **settings_environment(Path(var_dir)),
                "DATABASE_URL": database_url(database),
                "REDIS_URL": args.redis_url,
                "CHANNEL_LAYER_PREFIX": prefix,
                "THROTTLE_CACHE_PREFIX": prefix,
                "HEARTBEAT_TIMEOUT_SECONDS": "86400",  # nothing judges the idle sockets' instances gone
            }
        )
        sys.path.insert(0, str(ROOT))
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connection

        call_command("migrate", verbosity=0)
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            info["postgresql_synchronous_commit"] = cursor.fetchone()[0]
            cursor.execute("SHOW fsync")
            info["postgresql_fsync"] = cursor.fetchone()[0]
        have = 0
        try:
            for size in sizes:
                began = time.monotonic()
                grow_to(size, have)
                have = size
                print(f"{size} instances ready in {time.monotonic() - began:.1f} s", file=sys.stderr)
                row = heartbeat_costs(size, args.beats, args.batch)
                measured["postgres"].append(row)
                print(json.dumps(row), file=sys.stderr)
                if "schedules" not in measured:
                    measured["schedules"] = schedule_costs(size // SITE_SIZE)
                    print(json.dumps(measured["schedules"]), file=sys.stderr)
                if args.sockets and "sockets" not in measured and size >= args.sockets:
                    # On the smallest table that has enough instances: what a socket costs does not depend
                    # on how many other instances the database holds.
                    measured["sockets"] = socket_costs(args, database, Path(var_dir), prefix)
                    print(json.dumps(measured["sockets"]), file=sys.stderr)
        finally:
            delete_redis_keys(args.redis_url, prefix)
    info["load_average_after"] = list(os.getloadavg())
    server_ms, source = latest_heartbeat_server_ms()
    measured["api_server_cpu_ms_per_heartbeat"] = {"value": server_ms, "from": source}
    measured["model"] = model(measured, server_ms, args.event_every)
    path = write_report(
        benchmark="scaling",
        started_at=started_at,
        info=info,
        parameters=vars(args),
        extra={},
        results=measured,
        out=args.out,
    )
    print(f"\nAPI CPU per heartbeat {server_ms} ms (from {source})")
    for row in measured["model"]:
        print(json.dumps(row))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
