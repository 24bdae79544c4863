"""Overload benchmark (not a test; `make test` never runs it). See bench/README.md.

    .venv/bin/python bench/overload.py [--rates 25,50,75,100,150,250] [--seconds 10] [--limits 0,16]
    .venv/bin/python bench/overload.py --server gunicorn   # the production shape's REST server
                                                           # (run_prod's worker class; limit per worker)

The embedded default's server (`manage.py serve --no-beat`: one daphne process) on PostgreSQL, driven
with heartbeats at fixed offered rates (open loop: request i is due at start + i / rate, whatever
became of the earlier ones), once per admission-control setting in `--limits` (MAX_REQUESTS_IN_FLIGHT;
0 = off, the server as it was before admission control). For each rate it reports the answers by
status, the p50/p99 of the 200s and the p99 of all answers (a 503 is an answer, a timeout is not: it
counts as `--timeout` seconds), and how late the client sent (its own lag: more threads needed when it
grows). Capacity is the highest rate whose 200s have p99 < 250 ms with nothing shed or lost.

Creates its own PostgreSQL database (promsnmp_overload_<pid>), drops it at the end (also on failure or
Ctrl-C). The rate limits are set out of reach (one token drives the whole load). Only 127.0.0.1 is
contacted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
from common import (
    ROOT,
    capacity_per_s,
    database_url,
    end_on_sigterm,
    machine,
    machine_line,
    own_database,
    percentile,
    rate_step_summary,
    server,
    settings_environment,
    write_report,
)

SITE = "bench-overload"
CAPACITY_P99_S = 0.25  # "serves N heartbeats/s at p99 < 250 ms" (issue 8)


def drive(
    base: str,
    token: str,
    instance_ids: list[str],
    *,
    rate: float,
    seconds: float,
    threads: int,
    timeout: float,
):
    """Heartbeats at `rate`/s for `seconds`: [(status or error name, latency_s, lag_s, answered_at_s)]."""
    total = int(rate * seconds)
    counter = itertools.count()
    results: list[tuple[str, float, float, float]] = []
    start = time.monotonic() + 0.5

    def worker() -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        while (index := next(counter)) < total:
            due = start + index / rate
            if (delay := due - time.monotonic()) > 0:
                time.sleep(delay)
            sent = time.monotonic()
            instance = instance_ids[index % len(instance_ids)]
            try:
                response = session.post(
                    f"{base}/api/v1/instances/{instance}/heartbeat",
                    json={"status": "healthy"},
                    timeout=timeout,
                )
                outcome, latency = str(response.status_code), time.monotonic() - sent
            except requests.RequestException as exc:
                outcome, latency = type(exc).__name__, timeout
            results.append((outcome, latency, sent - due, sent + latency - start))
        session.close()

    workers = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    return results


def summarise(rate: float, results: list[tuple[str, float, float, float]]) -> dict:
    """The step's figures (common.rate_step_summary) and the p99 of every answer (a 503 is an answer) and
    of everything (a timeout counts as the client's timeout)."""
    row = rate_step_summary(rate, results)
    answers = [latency for outcome, latency, *_ in results if outcome.isdigit()]
    row["answers_p99_ms"] = round(percentile(answers, 0.99) * 1000, 1) if answers else None
    row["all_p99_ms"] = round(percentile([latency for _, latency, *_ in results], 0.99) * 1000, 1)
    row["meets"] = bool(
        row["ok_p99_ms"] is not None
        and row["ok_p99_ms"] < CAPACITY_P99_S * 1000
        and set(row["statuses"]) == {"200"}
    )
    return row


def run(args: argparse.Namespace, database: str, var_dir: Path) -> dict:
    os.environ.update(
        {
            **settings_environment(var_dir),
            "DATABASE_URL": database_url(database),
            "RATE_LIMIT_PER_TOKEN": "100000000/min",
            "RATE_LIMIT_REGISTER_PER_SITE": "100000000/min",
        }
    )
    os.environ.pop("REDIS_URL", None)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    from core.audit import Actor
    from core.services import token_create
    from sites.services import site_create

    call_command("migrate", verbosity=0)
    actor = Actor.command("bench")
    site_create(actor=actor, site_id=SITE, values={"label": "Overload benchmark"})
    _, token = token_create(actor=actor, name="bench instances", scopes=["instance"], site_id=SITE)

    results: dict = {}
    instance_ids: list[str] = []
    # The limit is per process: serve's one daphne, or each of gunicorn's 2 ThreadWorker workers.
    for limit in args.limits:
        env = {**os.environ, "MAX_REQUESTS_IN_FLIGHT": str(limit or 0)}
        with server(args.server, env, var_dir / f"{args.server}-{limit}.log") as base:
            headers = {"Authorization": f"Bearer {token}"}
            while len(instance_ids) < args.instances:  # through the API, as instances do
                response = requests.post(
                    f"{base}/api/v1/instances/register",
                    json={"siteId": SITE, "hostname": f"collector-{len(instance_ids):03d}"},
                    headers=headers,
                    timeout=30,
                )
                response.raise_for_status()
                instance_ids.append(response.json()["instanceId"])
            rows = []
            for rate in args.rates:
                outcome = drive(
                    base,
                    token,
                    instance_ids,
                    rate=rate,
                    seconds=args.seconds,
                    threads=args.threads,
                    timeout=args.timeout,
                )
                row = summarise(rate, outcome)
                rows.append(row)
                print(f"{args.server} limit {limit} {row}", file=sys.stderr)
                time.sleep(args.pause)  # let the last requests drain before the next rate
            results[f"limit_{limit}"] = {
                "max_requests_in_flight": limit,
                "rates": rows,
                "capacity_per_s": capacity_per_s(rows),
            }
    return results


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rates", default="25,50,75,100,150,250", help="offered heartbeats/s, in turn")
    parser.add_argument("--limits", default="0,16", help="MAX_REQUESTS_IN_FLIGHT values (0 = off)")
    parser.add_argument(
        "--server", choices=("serve", "gunicorn"), default="serve", help="manage.py serve, or gunicorn -w 2"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds at each rate (10)")
    parser.add_argument("--threads", type=int, default=256, help="client threads (256)")
    parser.add_argument("--timeout", type=float, default=5.0, help="client timeout, seconds (5)")
    parser.add_argument("--instances", type=int, default=50, help="instances heartbeating in turn (50)")
    parser.add_argument("--pause", type=float, default=3.0, help="seconds between rates (3)")
    parser.add_argument("--out", metavar="FILE", help="results JSON (bench/results/overload-<date>.json)")
    args = parser.parse_args()
    args.rates = [float(r) for r in args.rates.split(",")]
    args.limits = [int(v) for v in args.limits.split(",")]

    end_on_sigterm()
    started_at = dt.datetime.now(dt.UTC)
    info = machine()
    with (
        tempfile.TemporaryDirectory(prefix="promsnmp-overload-") as tmp,
        own_database("promsnmp_overload") as database,
    ):
        results = run(args, database, Path(tmp))
    out = write_report(
        benchmark="overload",
        started_at=started_at,
        info=info,
        parameters={k: v for k, v in vars(args).items() if k != "out"},
        extra={"capacity_p99_s": CAPACITY_P99_S},
        results=results,
        suffix="" if args.server == "serve" else f"-{args.server}",
        out=args.out,
    )
    print(f"\n{machine_line(info)}")
    columns = ("limit", "offered/s", "200/s", "503", "lost", "p50 200", "p99 200", "p99 all")
    print(" ".join(f"{name:>{width}}" for name, width in zip(columns, (6, 9, 7, 6, 5, 8, 8, 8), strict=True)))
    for key, result in results.items():
        for row in result["rates"]:
            lost = sum(n for s, n in row["statuses"].items() if not s.isdigit())
            print(
                f"{key.removeprefix('limit_'):>6} {row['offered_per_s']:>9.0f} {row['ok_per_s']:>7.1f} "
                f"{row['statuses'].get('503', 0):>6} {lost:>5} {row['ok_p50_ms'] or '-':>8} "
                f"{row['ok_p99_ms'] or '-':>8} {row['all_p99_ms']:>8}"
            )
        print(f"{key}: capacity (p99 of 200s < 250 ms, nothing shed or lost): {result['capacity_per_s']}/s")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
