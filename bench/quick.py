"""Quick benchmarks (`make bench-quick`; not a test, `make test` never runs it). See bench/README.md.

    .venv/bin/python bench/quick.py                          # every small form, under a minute
    .venv/bin/python bench/quick.py --only inventory,heartbeat
    .venv/bin/python bench/quick.py --fail-on-regression     # exit 1 when a figure is 2 times worse
    .venv/bin/python bench/quick.py --accept                 # this run becomes the baseline anyway

Runs the small form of each benchmark (bench/inventory.py, heartbeat.py, fanout.py, discovery.py, and
failover.py when named in --only: the same scripts with small arguments, each in a process of its own, each
writing its JSON to a temporary file), then prints one table: each figure, its target (the issue's, scaled
to the small form where it depends on size: the table says what it stands for), the last recorded value on
this machine, and the ratio (above 1: worse). A figure more than `--threshold` (2) times worse than the last
recorded one is flagged as a regression; `--fail-on-regression` then exits 1. Only the figures the shared
machine's noise moves least (the best of several runs, CPU per operation, memory) are judged; tail latencies
are shown against their target and their last value, not judged.

Each run is appended to bench/results/quick-<YYYY-MM>.jsonl (committed; git merges it line by line,
.gitattributes) and written to bench/results/quick-latest.json (this checkout's, git-ignored): the
machine (nproc, CPU model, load average before and after), the commit and modified files, every figure.
The baseline of a figure is its value in the newest *accepted* record of the same machine (nproc and CPU
model): a run with a regression is recorded but not accepted, so running again compares with the same
baseline, until `--accept` says the change is meant (or a run shows no regression).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from common import (
    RESULTS,
    ROOT,
    TEMPLATE_DATABASE_ENV,
    code_version,
    database_url,
    load_average,
    machine,
    own_database,
    settings_environment,
    shown,
)

LATEST = "quick-latest.json"  # in RESULTS
THRESHOLD = 2.0


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    unit: str
    read: Callable[[dict], float | None]  # from the benchmark's JSON report
    target: float | None = None
    stands_for: str = ""  # the target that `target` is the small form of
    better: str = "lower"  # or "higher"
    judged: bool = True  # compared with the baseline (False: tail latencies, too noisy to judge)


@dataclass(frozen=True)
class Benchmark:
    name: str
    arguments: list[str]
    figures: list[Figure] = field(default_factory=list)
    redis: bool = False  # takes --redis-url
    by_default: bool = True  # in a run without --only


def _rate(report: dict, rate: float) -> dict:
    return next(row for row in report["results"]["rates"] if row["offered_per_s"] == rate)


def _discovery(report: dict) -> dict:
    return report["results"]["/20"]["medians"]["after"]


INVENTORY_DEVICES, GET_DEVICES, HEARTBEAT_RATES = 1000, 1000, (100.0, 333.0)
BENCHMARKS = [
    Benchmark(
        "inventory",
        ["--devices", str(INVENTORY_DEVICES), "--get-devices", str(GET_DEVICES), "--repeat", "3"],
        [
            Figure(
                "inventory.put_merge_1k",
                "PUT merge, 1,000 new devices",
                "ms",
                lambda r: r["results"]["put_100k_merge"]["seconds"] * 1000,
                target=10_000 * INVENTORY_DEVICES / 100_000,
                stands_for="100,000 in < 10 s (§4), per device",
            ),
            Figure(
                "inventory.put_unchanged_1k",
                "the same PUT, unchanged",
                "ms",
                lambda r: r["results"]["put_100k_unchanged"]["seconds"] * 1000,
                target=30_000 * INVENTORY_DEVICES / 100_000,
                stands_for="100,000 in < 30 s (issue 3), per device",
            ),
            Figure(
                "inventory.get_full_1k",
                "GET full inventory, 1,000 devices (best of 3)",
                "ms",
                lambda r: r["results"]["get_10k_full_analyzed"]["min_s"] * 1000,
                target=300 * GET_DEVICES / 10_000,
                stands_for="10,000 in < 300 ms (§4), per device",
            ),
            Figure(
                "inventory.changes_since",
                "changes?since after 100 updates (best of 3)",
                "ms",
                lambda r: r["results"]["changes_after_100_updates_analyzed"]["min_s"] * 1000,
                target=10,
                stands_for="< 10 ms (§4)",
            ),
            Figure(
                "inventory.post_one",
                "POST one device (best of 100)",
                "ms",
                lambda r: r["results"]["post_single_device"]["min_s"] * 1000,
                target=20,
                stands_for="< 20 ms into the 100k site (§4)",
            ),
        ],
    ),
    Benchmark(
        "heartbeat",
        [
            *("--server", "gunicorn", "--rates", ",".join(f"{rate:g}" for rate in HEARTBEAT_RATES)),
            *("--seconds", "1.5", "--pause", "0.5", "--warm-up", "0.5"),
            *("--instances", "500", "--sites", "20"),
        ],
        [
            Figure(
                "heartbeat.cpu_ms_100",
                "CPU per heartbeat at 100/s, server + PostgreSQL",
                "ms",
                lambda r: (
                    _rate(r, 100)["server_cpu_ms_per_heartbeat"]
                    + _rate(r, 100)["database_cpu_ms_per_heartbeat"]
                ),
                target=6.0,
                stands_for="333/s on 2 cores (§1): 2,000 ms/s ÷ 333",
            ),
            Figure(
                "heartbeat.served_333",
                "heartbeats answered 200 per s, 333/s offered",
                "/s",
                lambda r: _rate(r, 333)["ok_per_s"],
                target=0.95 * 333,
                stands_for="≥ 333/s (§1), 95 % of the offered rate",
                better="higher",
                judged=False,
            ),
            Figure(
                "heartbeat.p99_333",
                "p99 of the 200s at 333/s",
                "ms",
                lambda r: _rate(r, 333)["ok_p99_ms"],
                target=250,
                stands_for="p99 < 250 ms at 333/s (§1)",
                judged=False,
            ),
        ],
        redis=True,
    ),
    Benchmark(
        "fanout",
        ["--clients", "100", "--rounds", "6", "--pause", "0.2", "--settle", "0.5"],
        [
            Figure(
                "fanout.cpu_per_delivery",
                "CPU per event delivered, servers + PostgreSQL",
                "ms",
                lambda r: r["results"]["overall"]["server_cpu_ms_per_delivery"],
            ),
            Figure(
                "fanout.round_median",
                "every one of 100 sockets has the event (median round)",
                "ms",
                lambda r: r["results"]["overall"]["median_round_all_s"] * 1000,
                judged=False,
            ),
            Figure(
                "fanout.p99",
                "p99 per socket, from the POST",
                "ms",
                lambda r: r["results"]["overall"]["p99_s"] * 1000,
                target=1000,
                stands_for="p99 < 1 s to 1,000 sockets (issue 4)",
                judged=False,
            ),
            Figure(
                "fanout.missed",
                "events missed or sockets closed",
                "",
                lambda r: r["results"]["overall"]["missed"] + r["results"]["overall"]["sockets_closed"],
                target=0,
                stands_for="none",
                judged=False,
            ),
        ],
        redis=True,
    ),
    Benchmark(
        "discovery",
        ["--sizes", "20", "--tools", "after", "--no-defaults"],
        [
            Figure(
                "discovery.wall_20",
                "sweep of a /20 (4,096 addresses), timeout 1 s",
                "s",
                lambda r: _discovery(r)["wall_s"],
                target=1.0 + 15.0 * 4096 / 65536,
                stands_for="a /16 in ≤ 15 s (§3): the 1 s timeout + the rest per address",
            ),
            Figure("discovery.cpu_20", "its CPU", "s", lambda r: _discovery(r)["cpu_s"]),
            Figure(
                "discovery.rss_20",
                "its peak RSS (the agent's imports included)",
                "MiB",
                lambda r: _discovery(r)["peak_rss_mib"],
                target=100 / 1.048576,
                stands_for="< 100 MB (§3)",
            ),
            Figure(
                "discovery.found_20",
                "responders found, of 3",
                "",
                lambda r: len(r["results"]["/20"]["runs"]["after"][0]["found"]),
                target=3,
                stands_for="all",
                better="higher",
            ),
        ],
    ),
    Benchmark(
        "failover",
        [
            *("--shape", "serve", "--kills", "1", "--agents", "2", "--grace", "2"),
            *("--settle", "0.5", "--jitter", "0"),
        ],
        [
            Figure(
                "failover.beyond_grace",
                "new leader knows it, beyond a 2 s grace (1 kill)",
                "s",
                lambda r: r["results"]["event"]["max_s"] - r["results"]["timings"]["FAILOVER_GRACE_SECONDS"],
                target=2.0,
                stands_for="p99 ≤ 12 s with the default grace of 10 s (§2)",
                judged=False,
            ),
            Figure(
                "failover.most_leaders",
                "most leaders shown at once",
                "",
                lambda r: r["results"]["most_leaders_shown"],
                target=1,
                stands_for="never two",
                judged=False,
            ),
        ],
        redis=True,
        # 9 to 13 s of a loaded 2-core machine's 60 s (a kill, a grace, the agents' start): asked for by name.
        by_default=False,
    ),
]


# --- comparing and printing (pure) ---------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    figure: Figure
    value: float | None
    last: float | None

    @property
    def met(self) -> bool | None:
        if self.value is None or self.figure.target is None:
            return None
        if self.figure.better == "higher":
            return self.value >= self.figure.target
        return self.value <= self.figure.target

    @property
    def ratio(self) -> float | None:
        """How many times worse than the last recorded value (above 1: worse, below 1: better)."""
        return worse_ratio(self.value, self.last, self.figure.better)

    def regressed(self, threshold: float) -> bool:
        return self.figure.judged and self.ratio is not None and self.ratio > threshold


def worse_ratio(value: float | None, last: float | None, better: str = "lower") -> float | None:
    if value is None or last is None:
        return None
    worse, best = (last, value) if better == "higher" else (value, last)
    if best <= 0:
        return None if worse <= 0 else float("inf")
    return worse / best


def same_machine(record: dict, info: dict) -> bool:
    theirs = record.get("machine", {})
    return (theirs.get("nproc"), theirs.get("cpu")) == (info.get("nproc"), info.get("cpu"))


def baseline_values(records: list[dict], info: dict) -> dict[str, float]:
    """Per figure, its value in the newest accepted record of this machine that has it."""
    values: dict[str, float] = {}
    mine = [r for r in records if r.get("accepted") and same_machine(r, info)]
    for record in sorted(mine, key=lambda r: r["started_at"]):
        values.update({k: v for k, v in record.get("figures", {}).items() if v is not None})
    return values


def compare(figures: list[Figure], values: dict[str, float | None], baseline: dict[str, float]) -> list[Row]:
    """A row per figure measured (or attempted: None when its benchmark failed)."""
    return [Row(f, values.get(f.key), baseline.get(f.key)) for f in figures if f.key in values]


def number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "–"
    if value == int(value) and abs(value) < 1e6:
        text = f"{int(value)}"
    elif abs(value) >= 100:
        text = f"{value:.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".rstrip()


def table(rows: list[Row], threshold: float) -> str:
    """Figure, value, target (met or not), last recorded, ratio (flagged when a judged figure regressed)."""
    lines = [("figure", "value", "target", "last", "ratio", "")]
    for row in rows:
        figure = row.figure
        target = "–"
        if figure.target is not None:
            sign = "≥" if figure.better == "higher" else "≤"
            target = f"{sign} {number(figure.target, figure.unit)} {'ok' if row.met else 'MISSED'}"
        ratio = "–" if row.ratio is None else f"{row.ratio:.2f}×"
        if row.regressed(threshold):
            note = f"REGRESSION (> {threshold:g}× worse)"
        elif not figure.judged:
            note = "(not judged)"
        else:
            note = ""
        value, last = number(row.value, figure.unit), number(row.last)
        lines.append((f"{figure.key}  {figure.label}", value, target, last, ratio, note))
    widths = [max(len(line[i]) for line in lines) for i in range(5)]
    out = []
    for index, line in enumerate(lines):
        numbers = (cell.rjust(width) for cell, width in zip(line[1:5], widths[1:], strict=True))
        out.append("  ".join([line[0].ljust(widths[0]), *numbers, line[5]]).rstrip())
        if index == 0:
            out.append("  ".join("-" * width for width in widths))
    return "\n".join(out)


def targets_legend(rows: list[Row]) -> str:
    return "\n".join(f"  {row.figure.key}: {row.figure.stands_for}" for row in rows if row.figure.stands_for)


def machine_summary(info: dict) -> str:
    load = info.get("load_average_before"), info.get("load_average_after")
    text = f"{info.get('nproc')} × {info.get('cpu')}, {info.get('ram_gib')} GiB"
    if load[0]:
        text += f", load average {load[0]}"
        if load[1]:
            text += f" → {load[1]}"
    return text


# --- records ------------------------------------------------------------------------------------------------


def history_path(started_at: dt.datetime, directory: Path = RESULTS) -> Path:
    return directory / f"quick-{started_at:%Y-%m}.jsonl"


def read_records(directory: Path = RESULTS) -> list[dict]:
    records = []
    for path in sorted(directory.glob("quick-*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                records.append(json.loads(line))
    return records


def write_record(record: dict, directory: Path = RESULTS) -> Path:
    """Appended to the month's history (one line) and written as the checkout's latest; → the history."""
    path = history_path(dt.datetime.fromisoformat(record["started_at"]), directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as history:
        history.write(json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n")
    (directory / LATEST).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    return path


# --- running ------------------------------------------------------------------------------------------------


def migrate_template(database: str, tmp: Path) -> None:
    """Migrate the database the benchmarks copy theirs from (common.own_database): once, not per benchmark."""
    env = {**os.environ, **settings_environment(tmp), "DATABASE_URL": database_url(database)}
    command = [sys.executable, "manage.py", "migrate", "--noinput", "-v0"]
    subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True)


def run_one(benchmark: Benchmark, redis_url: str, tmp: Path) -> tuple[dict | None, float, str]:
    """The benchmark's small form in a process of its own: (its JSON report or None, seconds, log tail)."""
    out = tmp / f"{benchmark.name}.json"
    command = [sys.executable, str(ROOT / "bench" / f"{benchmark.name}.py"), *benchmark.arguments]
    command += ["--out", str(out)]
    if benchmark.redis:
        command += ["--redis-url", redis_url]
    started = time.monotonic()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    log = (done.stdout + done.stderr)[-3000:]
    if done.returncode != 0 or not out.exists():
        return None, seconds, log
    return json.loads(out.read_text()), seconds, log


def read_figures(benchmark: Benchmark, report: dict | None) -> dict[str, float | None]:
    values: dict[str, float | None] = {}
    for figure in benchmark.figures:
        try:
            value = figure.read(report) if report is not None else None
        except (KeyError, StopIteration, TypeError, IndexError):
            value = None
        values[figure.key] = None if value is None else round(float(value), 4)
    return values


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    names = [benchmark.name for benchmark in BENCHMARKS]
    defaults = [benchmark.name for benchmark in BENCHMARKS if benchmark.by_default]
    parser.add_argument(
        "--only", help=f"comma-separated, of: {','.join(names)} (default: {','.join(defaults)})"
    )
    parser.add_argument(
        "--threshold", type=float, default=THRESHOLD, help="times worse than the last that flags (2)"
    )
    parser.add_argument("--fail-on-regression", action="store_true", help="exit 1 on a flagged figure")
    parser.add_argument("--accept", action="store_true", help="record this run as the baseline, flags or not")
    parser.add_argument("--no-record", action="store_true", help="compare only; write no record")
    parser.add_argument(
        "--redis-url", default="redis://127.0.0.1:6379/10", help="loopback Redis for the benchmarks (db 10)"
    )
    args = parser.parse_args()
    chosen = args.only.split(",") if args.only else defaults
    if unknown := set(chosen) - set(names):
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    if not args.redis_url.startswith(("redis://127.", "redis://localhost")):
        parser.error("--redis-url must be on loopback")

    started_at = dt.datetime.now(dt.UTC)
    info = machine()
    info["load_average_before"] = load_average()
    started = time.monotonic()
    values: dict[str, float | None] = {}
    seconds: dict[str, float] = {}
    failed: dict[str, str] = {}
    with (
        tempfile.TemporaryDirectory(prefix="promsnmp-quick-") as tmp,
        own_database("promsnmp_quick_template") as template,
    ):
        print("migrating the template database …", end=" ", flush=True)
        migrate_template(template, Path(tmp))
        seconds["migrate"] = round(time.monotonic() - started, 1)
        print(f"{seconds['migrate']} s", flush=True)
        os.environ[TEMPLATE_DATABASE_ENV] = template  # the benchmarks' databases: copies of it
        for benchmark in BENCHMARKS:
            if benchmark.name not in chosen:
                continue
            print(f"{benchmark.name} …", end=" ", flush=True)
            report, took, log = run_one(benchmark, args.redis_url, Path(tmp))
            seconds[benchmark.name] = round(took, 1)
            print(f"{took:.1f} s" + ("" if report else " FAILED"), flush=True)
            if report is None:
                failed[benchmark.name] = log
            values.update(read_figures(benchmark, report))
    info["load_average_after"] = load_average()
    total = round(time.monotonic() - started, 1)

    figures = [figure for benchmark in BENCHMARKS for figure in benchmark.figures]
    rows = compare(figures, values, baseline_values(read_records(), info))
    regressions = [row.figure.key for row in rows if row.regressed(args.threshold)]
    for name, log in failed.items():
        print(f"\n{name} failed; the end of its output:\n{log}", file=sys.stderr)
    print(f"\nmachine: {machine_summary(info)}")
    print(f"benchmarks: {', '.join(f'{name} {took} s' for name, took in seconds.items())}; total {total} s\n")
    print(table(rows, args.threshold))
    print(f"\ntargets (the issue's, for the small form):\n{targets_legend(rows)}")
    if regressions:
        print(
            f"\n{len(regressions)} figure(s) more than {args.threshold:g}× worse than the last accepted run "
            f"on this machine: {', '.join(regressions)}. The machine is shared: run again to tell a change "
            "from noise; `--accept` records a meant change as the new baseline."
        )
    if not args.no_record:
        record = {
            "benchmark": "quick",
            "started_at": started_at.isoformat(timespec="seconds"),
            "machine": info,
            "code": code_version(),
            "seconds": {**seconds, "total": total},
            "threshold": args.threshold,
            "regressions": regressions,
            "failed": sorted(failed),
            "accepted": args.accept or not (regressions or failed),
            "figures": values,
        }
        path = write_record(record)
        accepted = "the new baseline" if record["accepted"] else "not accepted as a baseline"
        print(f"recorded in {shown(path)} and {shown(RESULTS / LATEST)} ({accepted})")
    if failed:
        return 2
    return 1 if regressions and args.fail_on_regression else 0


if __name__ == "__main__":
    sys.exit(main())
