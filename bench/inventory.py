"""Inventory benchmark (not a test; `make test` never runs it). See bench/README.md.

    .venv/bin/python bench/inventory.py [--devices 100000] [--get-devices 10000] [--repeat 5]

Creates its own PostgreSQL database (promsnmp_bench_<pid> on 127.0.0.1:5432, user postgres), migrates
it, starts a real server process on a free loopback port (`manage.py serve`: daphne, the embedded
default's server; `--server gunicorn` for the production shape's REST server) and measures, over
HTTP with `requests`, what an API client sees:

1. PUT inventory (mode merge) of N devices with one v2c agent each, into an empty site;
2. the same PUT again, unchanged: must answer changed=false with the same version;
3. a full GET of a separate M-device site, timed to the last byte;
4. GET changes?since=V after 100 single-device POSTs (each changes one sysDescr) on the N-device site.

It also times the same N-device import in-process (json.loads, parse_devices, inventory_import) into a
third site, and the reads and one-device POSTs through Django's test client (no socket), so the
HTTP/server overhead is visible. `--profile DIR` then writes cProfile stats of each in-process step to
DIR/*.prof (read them with `python -m pstats FILE`); they are taken after the timed runs.

The addresses (10.0.0.0/8) are data only: nothing but the loopback server is ever contacted. The
database is dropped at the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import gc
import ipaddress
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests
from common import (
    ROOT,
    database_url,
    end_on_sigterm,
    machine,
    machine_line,
    own_database,
    server,
    settings_environment,
    shown,
    summary,
    write_report,
)

TARGETS = {  # seconds: issue 12 §4 ("the next targets"); the unchanged PUT keeps issue 3's, it set none
    "put_100k_merge": 10.0,
    "put_100k_unchanged": 30.0,
    "get_10k_full": 0.300,
    "changes_after_100_updates": 0.010,
    "post_single_device": 0.020,
}
BIG_SITE, GET_SITE, INPROC_SITE = "bench-big", "bench-get", "bench-inproc"
COMMUNITY = "bench-community"


# --- data -------------------------------------------------------------------------------------------


def wire_devices(count: int, *, prefix: str, first_address: str) -> list[dict]:
    """`count` devices, one v2c agent each, consecutive addresses from `first_address` (data only)."""
    base = int(ipaddress.IPv4Address(first_address))
    return [
        {
            "sysName": f"{prefix}-{index:06d}",
            "sysDescr": f"Bench router {index}",
            "sysLocation": "rack 1",
            "sysObjectId": "1.3.6.1.4.1.9.1.2066",
            "interfaces": 24,
            "agents": [
                {
                    "address": str(ipaddress.IPv4Address(base + index)),
                    "port": 161,
                    "version": 2,
                    "type": "community",
                    "readCommunity": COMMUNITY,
                }
            ],
        }
        for index in range(count)
    ]


# --- the benchmark ----------------------------------------------------------------------------------


def run(args: argparse.Namespace, database: str, var_dir: Path) -> dict:
    os.environ.update({**settings_environment(var_dir), "DATABASE_URL": database_url(database)})
    os.environ.pop("REDIS_URL", None)  # the embedded default: in-memory channel layer, eager Celery
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from core.audit import Actor
    from core.services import token_create
    from inventory.services import inventory_import, parse_devices
    from sites.services import site_create

    started = time.perf_counter()
    call_command("migrate", verbosity=0)
    print(f"migrated in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    actor = Actor.command("bench")
    for site_id in (BIG_SITE, GET_SITE, INPROC_SITE):
        site_create(actor=actor, site_id=site_id, values={"label": site_id})
    _, token = token_create(actor=actor, name="bench", scopes=["admin"])

    results: dict = {}

    def timed(call, repeat: int) -> dict:
        """Run `call` `repeat` times (it returns the bytes received); the times and the size."""
        samples, size = [], 0
        for _ in range(repeat):
            started = time.perf_counter()
            size = call()
            samples.append(time.perf_counter() - started)
        print(f"    median {statistics.median(samples) * 1000:.1f} ms, {size:,} bytes", file=sys.stderr)
        return {**summary(samples), "bytes": size}

    def analyze() -> float:
        started = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE devices, agents")
        return round(time.perf_counter() - started, 3)

    big = wire_devices(args.devices, prefix="big", first_address="10.0.0.1")
    small = wire_devices(args.get_devices, prefix="get", first_address="10.200.0.1")
    big_body = json.dumps({"mode": "merge", "devices": big}, separators=(",", ":")).encode()
    small_body = json.dumps({"mode": "merge", "devices": small}, separators=(",", ":")).encode()
    results["put_body_mib"] = round(len(big_body) / 2**20, 1)
    # The generated data stays alive all run: keep it out of the garbage collector's full passes, so
    # that it does not slow down the in-process measurements (the server is a process of its own).
    gc.collect()
    gc.freeze()

    log_path = var_dir / "server.log"
    with server(args.server, dict(os.environ), log_path) as base, requests.Session() as http:
        http.headers["Authorization"] = f"Bearer {token}"
        json_headers = {"Content-Type": "application/json"}

        def put(site_id: str, body: bytes) -> tuple[float, dict]:
            started = time.perf_counter()
            response = http.put(f"{base}/api/v1/sites/{site_id}/inventory", data=body, headers=json_headers)
            elapsed = time.perf_counter() - started
            if response.status_code != 200:
                raise RuntimeError(f"PUT {site_id}: {response.status_code} {response.text[:1000]}")
            return elapsed, response.json()

        # (1) PUT merge of N devices into an empty site.
        print(f"(1) PUT merge of {args.devices} devices …", file=sys.stderr)
        elapsed, first = put(BIG_SITE, big_body)
        assert first["changed"] and first["added"] == args.devices, first
        results["put_100k_merge"] = {"seconds": round(elapsed, 3), "response": first}
        print(f"    {elapsed:.2f} s: {first}", file=sys.stderr)

        # (2) The same PUT again: no change, no version bump.
        print("(2) the same PUT again, unchanged …", file=sys.stderr)
        elapsed, again = put(BIG_SITE, big_body)
        no_bump = again["changed"] is False and again["version"] == first["version"]
        results["put_100k_unchanged"] = {
            "seconds": round(elapsed, 3),
            "response": again,
            "no_version_bump": no_bump,
        }
        print(f"    {elapsed:.2f} s: {again} (no version bump: {no_bump})", file=sys.stderr)

        _, loaded = put(GET_SITE, small_body)
        assert loaded["added"] == args.get_devices, loaded
        since = again["version"]

        def get_full() -> int:
            response = http.get(f"{base}/api/v1/sites/{GET_SITE}/inventory", stream=True)
            body = b"".join(response.iter_content(chunk_size=1 << 16))
            assert response.status_code == 200, response.status_code
            return len(body)

        def check_full() -> None:
            document = http.get(f"{base}/api/v1/sites/{GET_SITE}/inventory").json()
            assert len(document["devices"]) == args.get_devices, len(document["devices"])
            assert document["devices"][0]["agents"][0]["readCommunity"] == "****"

        def get_changes() -> int:
            response = http.get(f"{base}/api/v1/sites/{BIG_SITE}/inventory/changes", params={"since": since})
            assert response.status_code == 200, (response.status_code, response.content[:500])
            return len(response.content)

        def check_changes() -> None:
            changes = http.get(
                f"{base}/api/v1/sites/{BIG_SITE}/inventory/changes", params={"since": since}
            ).json()
            assert len(changes["devices"]) == 100 and changes["version"] == since + 100, changes["version"]

        # (3) Full GET of a separate M-device site, to the last byte.
        print(f"(3) GET of a {args.get_devices}-device site, {args.repeat} times …", file=sys.stderr)
        check_full()
        results["get_10k_full"] = timed(get_full, args.repeat)

        # (4) changes?since after 100 single-device updates (POST inventory/devices) on the big site.
        print("(4) 100 single-device POSTs, then changes?since …", file=sys.stderr)
        post_samples = []
        for index in range(100):
            device = {**big[index * (len(big) // 100)], "sysDescr": f"Bench router, updated {index}"}
            started = time.perf_counter()
            response = http.post(
                f"{base}/api/v1/sites/{BIG_SITE}/inventory/devices",
                data=json.dumps({"devices": [device], "source": "api"}),
                headers=json_headers,
            )
            post_samples.append(time.perf_counter() - started)
            assert response.status_code == 200 and response.json()["updated"] == 1, response.text[:500]
        results["post_single_device"] = summary(post_samples)
        check_changes()
        results["changes_after_100_updates"] = timed(get_changes, args.repeat)

        # The same reads once the tables have planner statistics, as autovacuum gives them some time
        # after a bulk import (and never where autovacuum is off, as on our development servers).
        print("ANALYZE devices, agents; the reads again …", file=sys.stderr)
        results["analyze_s"] = analyze()
        results["get_10k_full_analyzed"] = timed(get_full, args.repeat)
        results["changes_after_100_updates_analyzed"] = timed(get_changes, args.repeat)

    # In-process, no socket: the same import through the service into a third empty site, and the
    # reads and a POST through Django's test client (middleware, DRF, the view; no daphne, no HTTP).
    print(f"in-process import of {args.devices} devices …", file=sys.stderr)
    inproc = {}
    for label in ("first", "unchanged"):
        started = time.perf_counter()
        body = json.loads(big_body)
        decoded = time.perf_counter()
        devices, errors = parse_devices(body["devices"])
        parsed = time.perf_counter()
        assert not errors
        result = inventory_import(actor=actor, site_id=INPROC_SITE, devices=devices, mode="merge")
        done = time.perf_counter()
        inproc[label] = {
            "json_decode_s": round(decoded - started, 3),
            "parse_devices_s": round(parsed - decoded, 3),
            "inventory_import_s": round(done - parsed, 3),
            "total_s": round(done - started, 3),
            "changed": result.changed,
            "version": result.version,
        }
        print(f"    {label}: {inproc[label]}", file=sys.stderr)
    results["in_process_import"] = inproc
    del body, devices, result  # the in-process reads below must not pay for them in GC passes
    gc.collect()

    analyze()  # the in-process reads compare with the HTTP reads on analysed tables
    from django.test import Client

    client = Client(headers={"Authorization": f"Bearer {token}"})

    def get_full_in_process() -> int:
        response = client.get(f"/api/v1/sites/{GET_SITE}/inventory")
        assert response.status_code == 200
        return len(b"".join(response.streaming_content))

    def get_changes_in_process() -> int:
        response = client.get(f"/api/v1/sites/{BIG_SITE}/inventory/changes", {"since": since})
        assert response.status_code == 200
        return len(b"".join(response.streaming_content))

    post_index = iter(range(10**6))

    def post_one() -> int:
        index = next(post_index)
        device = {**big[index * 7 % len(big)], "sysDescr": f"Bench router, in-process update {index}"}
        response = client.post(
            f"/api/v1/sites/{BIG_SITE}/inventory/devices",
            {"devices": [device], "source": "api"},
            content_type="application/json",
        )
        assert response.status_code == 200 and response.json()["updated"] == 1, response.content[:500]
        return len(response.content)

    print("in-process reads and POSTs (Django test client) …", file=sys.stderr)
    results["in_process_get_full"] = timed(get_full_in_process, args.repeat)
    results["in_process_changes"] = timed(get_changes_in_process, args.repeat)
    results["in_process_post_single_device"] = timed(post_one, args.repeat)

    if args.profile:  # after the timed runs: cProfile slows Python code down about twofold
        profile_dir = Path(args.profile)
        profile_dir.mkdir(parents=True, exist_ok=True)
        site_create(actor=actor, site_id="bench-profile", values={"label": "bench-profile"})

        def import_fresh() -> None:
            devices, _ = parse_devices(json.loads(big_body)["devices"])
            inventory_import(actor=actor, site_id="bench-profile", devices=devices, mode="merge")

        def import_unchanged() -> None:
            devices, _ = parse_devices(json.loads(big_body)["devices"])
            result = inventory_import(actor=actor, site_id="bench-profile", devices=devices, mode="merge")
            assert not result.changed

        for name, call in (
            ("import", import_fresh),
            ("import-unchanged", import_unchanged),
            ("get-full", get_full_in_process),
            ("changes", get_changes_in_process),
            ("post-single-device", post_one),
        ):
            profiler = cProfile.Profile()
            profiler.runcall(call)
            profiler.dump_stats(profile_dir / f"{name}.prof")
        print(f"profiles: {profile_dir}/*.prof (python -m pstats FILE)", file=sys.stderr)
    return results


def table(results: dict, args: argparse.Namespace) -> str:
    n, m = f"{args.devices:,}", f"{args.get_devices:,}"

    def seconds(value: float) -> str:
        return f"{value:.2f} s" if value >= 1 else f"{value * 1000:.1f} ms"

    def once(label: str, key: str, target: float, extra: bool = True) -> tuple:
        value = results[key]["seconds"]
        return (label, seconds(value), "(1 run)", f"< {seconds(target)}", value < target and extra)

    def repeated(label: str, key: str, target: float | None = None) -> tuple:
        row = results[key]
        met = "" if target is None else row["median_s"] < target
        return (
            label,
            seconds(row["median_s"]),
            seconds(row["min_s"]),
            f"< {seconds(target)}" if target else "-",
            met,
        )

    unchanged = results["put_100k_unchanged"]
    rows = [
        ("scenario (HTTP unless marked)", "median", "min", "target", "met"),
        once(f"(1) PUT merge, {n} new devices", "put_100k_merge", TARGETS["put_100k_merge"]),
        once(
            f"(2) the same PUT again (no bump: {unchanged['no_version_bump']})",
            "put_100k_unchanged",
            TARGETS["put_100k_unchanged"],
            unchanged["no_version_bump"],
        ),
        repeated(f"(3) GET full, {m} devices, no statistics", "get_10k_full", TARGETS["get_10k_full"]),
        repeated(f"(3) GET full, {m} devices, analysed", "get_10k_full_analyzed", TARGETS["get_10k_full"]),
        repeated(
            "(4) changes?since, 100 updates, no statistics",
            "changes_after_100_updates",
            TARGETS["changes_after_100_updates"],
        ),
        repeated(
            "(4) changes?since, 100 updates, analysed",
            "changes_after_100_updates_analyzed",
            TARGETS["changes_after_100_updates"],
        ),
        repeated(
            f"    POST one device into the {n}-device site",
            "post_single_device",
            TARGETS["post_single_device"],
        ),
        repeated(f"in-process: GET full, {m}, analysed", "in_process_get_full"),
        repeated("in-process: changes?since, analysed", "in_process_changes"),
        repeated("in-process: POST one device", "in_process_post_single_device"),
    ]
    for label, key in (("in-process: import", "first"), ("in-process: import again, unchanged", "unchanged")):
        step = results["in_process_import"][key]
        rows.append(
            (
                f"{label}, {n}",
                seconds(step["total_s"]),
                "(1 run)",
                f"json {step['json_decode_s']:.1f} + parse {step['parse_devices_s']:.1f} "
                f"+ service {step['inventory_import_s']:.1f} s",
                "",
            )
        )
    widths = [max(len(str(row[i])) for row in rows) for i in range(5)]
    lines = []
    for index, row in enumerate(rows):
        cells = [("yes" if c else "NO") if isinstance(c, bool) else str(c) for c in row]
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=100_000, help="devices in the PUT import (100000)")
    parser.add_argument("--get-devices", type=int, default=10_000, help="devices in the GET site (10000)")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each timed read (5)")
    parser.add_argument("--server", choices=("serve", "gunicorn"), default="serve")
    parser.add_argument("--profile", metavar="DIR", help="write cProfile stats of the in-process steps here")
    parser.add_argument("--out", metavar="FILE", help="results JSON (bench/results/inventory-<date>.json)")
    args = parser.parse_args()
    if args.devices < 100:
        parser.error("--devices must be at least 100 (scenario 4 updates 100 of them)")

    end_on_sigterm()
    started_at = dt.datetime.now(dt.UTC)
    info = machine()
    with tempfile.TemporaryDirectory(prefix="promsnmp-bench-") as tmp, own_database() as database:
        results = run(args, database, Path(tmp))
    out = write_report(
        benchmark="inventory",
        started_at=started_at,
        info=info,
        parameters={
            "devices": args.devices,
            "get_devices": args.get_devices,
            "repeat": args.repeat,
            "server": args.server,
        },
        extra={"targets_s": TARGETS},
        results=results,
        suffix="" if args.server == "serve" else f"-{args.server}",
        out=args.out,
    )
    print(f"\n{machine_line(info)} (autovacuum {info['postgresql_autovacuum']}); server: {args.server}\n")
    print(table(results, args))
    print(f"\nresults: {shown(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
