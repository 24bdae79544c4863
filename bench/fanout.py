"""Event fan-out benchmark (not a test; `make test` never runs it). See bench/README.md.

    .venv/bin/python bench/fanout.py [--clients 1000] [--rounds 20] [--client-processes 2]

One site with `--clients` registered instances, each holding its event socket: half on one daphne
process, half on another (`manage.py serve --no-beat`), both on PostgreSQL and Redis (channels-redis),
as in production. Each round changes the inventory once (POST one device to the REST API, alternately
on either server) and measures, for every socket, the time from just before the request is sent until
that socket has read the round's `inventory_updated` event (matched by its version). A round's
fan-out time is its slowest socket.

The sockets are real WebSocket clients (the `websockets` package, asyncio) spread over
`--client-processes` processes, every process holding sockets on both servers. Arrival times are read
on CLOCK_MONOTONIC (system-wide on Linux, so comparable between processes) as soon as each client's
loop reads the frame; a busy client process makes them later, never earlier.

Creates its own PostgreSQL database (promsnmp_fanout_<pid>) and uses its own channel-layer prefix on
Redis (db 10 by default); drops the database and deletes its keys at the end, also on failure or Ctrl-C.
Only 127.0.0.1 is ever contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import requests
from common import (
    ROOT,
    CpuMeter,
    database_url,
    delete_redis_keys,
    end_on_sigterm,
    machine,
    machine_line,
    own_database,
    percentile,
    server,
    servers,
    settings_environment,
    shown,
    write_report,
)

TARGET_P99_S = 1.0  # issue 4, "Acceptance"
SITE = "bench-fanout"
CONNECT_CONCURRENCY = 25  # sockets a client process opens at once
# The device each round changes (its sysDescr); the address is data only, nothing is contacted.
PROBE_DEVICE = {
    "sysName": "fanout-probe",
    "agents": [{"address": "10.0.0.1", "port": 161, "version": 2, "type": "community", "readCommunity": "x"}],
}


# --- client processes -------------------------------------------------------------------------------


def client_process(urls: list[str], pipe) -> None:
    """Hold one socket per URL; answer the parent's ("collect", version, timeout) with arrival times."""
    asyncio.run(_clients(urls, pipe))


async def _clients(urls: list[str], pipe) -> None:
    from websockets.asyncio.client import connect

    arrivals: dict[int, list[float]] = {}  # inventory version → monotonic arrival times
    got_one = asyncio.Event()
    opened = asyncio.Semaphore(CONNECT_CONCURRENCY)
    sockets = []

    closed: list[str] = []  # how sockets that ended ended: a socket must stay open all run

    async def hold(url: str) -> None:
        async with opened:
            # No client pings: the server's keepalive pings are answered by the library anyway.
            socket = await connect(url, open_timeout=60, max_size=None, ping_interval=None)
        sockets.append(socket)
        try:
            async for message in socket:
                arrived = time.monotonic()
                frame = json.loads(message)
                if frame.get("type") == "inventory_updated":
                    arrivals.setdefault(frame["payload"]["version"], []).append(arrived)
                    got_one.set()
        except Exception as error:
            closed.append(repr(error))
        else:
            closed.append(f"closed {socket.close_code} {socket.close_reason!r}")

    readers = [asyncio.create_task(hold(url)) for url in urls]
    while len(sockets) < len(urls):
        failed = [task for task in readers if task.done() and task.exception()]
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
        _, version, timeout = command
        deadline = time.monotonic() + timeout
        while len(arrivals.get(version, [])) < len(urls) and time.monotonic() < deadline:
            got_one.clear()
            try:
                await asyncio.wait_for(got_one.wait(), timeout=max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                break
        pipe.send(("arrivals", version, arrivals.pop(version, []), list(closed)))
    await asyncio.gather(*(socket.close() for socket in sockets))  # their closing handshakes at once
    for task in readers:
        task.cancel()


# --- the benchmark ----------------------------------------------------------------------------------


def run(args: argparse.Namespace, database: str, var_dir: Path) -> dict:
    prefix = f"bench-fanout-{os.getpid()}"
    os.environ.update(
        {
            **settings_environment(var_dir),
            "DATABASE_URL": database_url(database),
            "REDIS_URL": args.redis_url,
            "CHANNEL_LAYER_PREFIX": prefix,
            # The instances register once and then only hold their sockets: nothing must judge them
            # gone during the run (no beat runs here anyway; this keeps their status honest too).
            "HEARTBEAT_TIMEOUT_SECONDS": "86400",
            "HEARTBEAT_INTERVAL_SECONDS": "3600",
        }
    )
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    from core.audit import Actor
    from core.services import token_create
    from instances.services import instance_register
    from sites.services import site_create

    started = time.perf_counter()
    call_command("migrate", verbosity=0)
    actor = Actor.command("bench")
    site_create(actor=actor, site_id=SITE, values={"label": "Fan-out benchmark"})
    _, admin_token = token_create(actor=actor, name="bench admin", scopes=["admin"])
    _, instance_token = token_create(actor=actor, name="bench instances", scopes=["instance"], site_id=SITE)
    instance_ids = [
        instance_register(actor=actor, site_id=SITE, hostname=f"collector-{index:04d}")[0].pk
        for index in range(args.clients)
    ]
    print(
        f"migrated, {args.clients} instances registered in {time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )

    results: dict = {"rounds": []}
    log_dir = Path(args.log_dir) if args.log_dir else var_dir
    log_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        stack.callback(delete_redis_keys, args.redis_url, prefix)  # the channel layer's groups
        specs = [("serve", log_dir / f"daphne-{name}.log") for name in ("a", "b")]
        server_processes: list = []  # their CPU is measured over the rounds
        bases = stack.enter_context(servers(specs, dict(os.environ), server_processes))
        # Socket i goes to server i % 2; client process p holds every p-th socket (both servers).
        sockets = [f"ws{base.removeprefix('http')}/api/v1/ws" for base in bases]
        # Where the inventory changes are POSTed: the daphne processes themselves (as in the embedded
        # default), or a gunicorn of its own (the production shape's REST server).
        rest = bases
        if args.rest == "gunicorn":
            gunicorn_log = log_dir / "gunicorn.log"
            rest = [stack.enter_context(server("gunicorn", dict(os.environ), gunicorn_log, server_processes))]
        urls = [
            f"{sockets[index % 2]}?instanceId={instance_id}&token={instance_token}"
            for index, instance_id in enumerate(instance_ids)
        ]
        context = multiprocessing.get_context("spawn")
        pipes, processes = [], []
        for part in range(args.client_processes):
            parent_end, child_end = context.Pipe()
            share = urls[part :: args.client_processes]
            process = context.Process(target=client_process, args=(share, child_end))
            process.start()
            pipes.append(parent_end)
            processes.append(process)
        stack.callback(lambda: [process.kill() for process in processes if process.is_alive()])

        started = time.perf_counter()
        for pipe in pipes:
            kind, detail = pipe.recv()
            if kind != "ready":
                raise RuntimeError(f"a client process could not connect: {detail}")
        results["connect_all_s"] = round(time.perf_counter() - started, 2)
        print(f"{args.clients} sockets open in {results['connect_all_s']} s", file=sys.stderr)
        time.sleep(args.settle)

        meter = CpuMeter([process.pid for process in server_processes], database)
        meter.start()
        with requests.Session() as http:
            http.headers["Authorization"] = f"Bearer {admin_token}"
            for round_index in range(args.rounds):
                base = rest[round_index % len(rest)]
                body = {"devices": [{**PROBE_DEVICE, "sysDescr": f"round {round_index}"}]}
                sent = time.monotonic()
                response = http.post(f"{base}/api/v1/sites/{SITE}/inventory/devices", json=body, timeout=30)
                answered = time.monotonic()
                if response.status_code not in (200, 201):
                    raise RuntimeError(f"POST devices: {response.status_code} {response.text[:500]}")
                answer = response.json()
                if answer["added"] + answer["updated"] != 1:
                    raise RuntimeError(f"POST devices changed nothing: {answer}")
                version = answer["newVersion"]
                for pipe in pipes:
                    pipe.send(("collect", version, args.timeout))
                arrivals, closed = [], []
                for pipe in pipes:
                    _, _, got, ended = pipe.recv()
                    arrivals += got
                    closed += ended
                if closed:
                    print(f"{len(closed)} sockets have closed, e.g. {closed[:2]}", file=sys.stderr)
                latencies = [arrived - sent for arrived in arrivals]
                row = {
                    "version": version,
                    "posted_to": "gunicorn" if args.rest == "gunicorn" else "ab"[round_index % 2],
                    "post_response_s": round(answered - sent, 4),
                    "received": len(latencies),
                    "missed": args.clients - len(latencies),
                    "sockets_closed": len(closed),
                    "p50_s": round(percentile(latencies, 0.50), 4) if latencies else None,
                    "p99_s": round(percentile(latencies, 0.99), 4) if latencies else None,
                    "all_s": round(max(latencies), 4) if latencies else None,
                    "latencies_s": [round(value, 4) for value in sorted(latencies)],
                }
                results["rounds"].append(row)
                print(
                    f"round {round_index + 1:>3}: version {version}, {row['received']}/{args.clients} got it;"
                    f" p50 {row['p50_s']} s, p99 {row['p99_s']} s, all {row['all_s']} s"
                    f" (POST answered in {row['post_response_s']} s)",
                    file=sys.stderr,
                )
                time.sleep(args.pause)
        results["cpu"] = meter.stop()
        for pipe in pipes:
            pipe.send(("stop",))
        for process in processes:
            process.join(timeout=30)

    every = [value for row in results["rounds"] for value in row["latencies_s"]]
    results["overall"] = {
        "samples": len(every),
        "missed": sum(row["missed"] for row in results["rounds"]),
        "sockets_closed": results["rounds"][-1]["sockets_closed"],
        "p50_s": round(percentile(every, 0.50), 4),
        "p99_s": round(percentile(every, 0.99), 4),
        "max_s": round(max(every), 4),
        "median_round_all_s": round(statistics.median(row["all_s"] for row in results["rounds"]), 4),
        "median_post_response_s": round(
            statistics.median(row["post_response_s"] for row in results["rounds"]), 4
        ),
    }
    # What an event costs the servers and PostgreSQL (the POST that makes it included), per socket it
    # reached: the figure the shared machine's noise moves least (bench/quick.py judges it).
    cpu = results["cpu"]
    results["overall"]["server_cpu_ms_per_delivery"] = round(
        1000 * (cpu["server_cpu_s"] + cpu["database_cpu_s"]) / max(1, len(every)), 3
    )
    return results


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=1000, help="instances, one socket each (1000)")
    parser.add_argument("--rounds", type=int, default=20, help="inventory changes measured (20)")
    parser.add_argument("--client-processes", type=int, default=2, help="processes holding the sockets (2)")
    parser.add_argument(
        "--rest",
        choices=("daphne", "gunicorn"),
        default="daphne",
        help="where the changes are POSTed: the two daphne processes in turn, or a gunicorn (daphne)",
    )
    parser.add_argument("--pause", type=float, default=2.0, help="seconds between rounds (2)")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds after connecting, before round 1")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds a round waits for every socket")
    parser.add_argument(
        "--redis-url", default="redis://127.0.0.1:6379/10", help="loopback Redis for the channel layer"
    )
    parser.add_argument("--log-dir", metavar="DIR", help="keep the servers' logs here (default: deleted)")
    parser.add_argument("--out", metavar="FILE", help="results JSON (bench/results/fanout-<date>.json)")
    args = parser.parse_args()
    if not args.redis_url.startswith(("redis://127.", "redis://localhost")):
        parser.error("--redis-url must be on loopback")
    if args.clients < 2 or args.rounds < 1 or args.client_processes < 1:
        parser.error("--clients ≥ 2, --rounds ≥ 1, --client-processes ≥ 1")

    end_on_sigterm()
    started_at = dt.datetime.now(dt.UTC)
    info = machine()
    with (
        tempfile.TemporaryDirectory(prefix="promsnmp-fanout-") as tmp,
        own_database("promsnmp_fanout") as database,
    ):
        results = run(args, database, Path(tmp))
    out = write_report(
        benchmark="fanout",
        started_at=started_at,
        info=info,
        parameters={
            "clients": args.clients,
            "rounds": args.rounds,
            "client_processes": args.client_processes,
            "servers": 2,
            "rest": args.rest,
            "pause_s": args.pause,
        },
        extra={"target_p99_s": TARGET_P99_S},
        results=results,
        suffix="" if args.rest == "daphne" else f"-{args.rest}",
        out=args.out,
    )
    overall = results["overall"]
    met = overall["p99_s"] < TARGET_P99_S and not overall["missed"] and not overall["sockets_closed"]
    print(
        f"\n{machine_line(info)}\n"
        f"{args.clients} sockets on 2 daphne processes (Redis channel layer),"
        f" {args.rounds} inventory changes POSTed to {args.rest}:\n"
        f"  sockets open in {results['connect_all_s']} s\n"
        f"  per socket, from the POST being sent: p50 {overall['p50_s'] * 1000:.0f} ms,"
        f" p99 {overall['p99_s'] * 1000:.0f} ms, max {overall['max_s'] * 1000:.0f} ms"
        f" ({overall['samples']} samples, {overall['missed']} missed,"
        f" {overall['sockets_closed']} sockets closed)\n"
        f"  servers and PostgreSQL CPU per event delivered: {overall['server_cpu_ms_per_delivery']} ms\n"
        f"  every socket had the event (median round): {overall['median_round_all_s'] * 1000:.0f} ms;"
        f" POST answered (median): {overall['median_post_response_s'] * 1000:.0f} ms\n"
        f"  target p99 < {TARGET_P99_S:.0f} s: {'met' if met else 'NOT met'}"
    )
    print(f"results: {shown(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
