"""bench/quick.py's comparing, recording and printing (pure functions: no benchmark runs here, and no
timing is asserted; `make bench-quick` measures)."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))
import quick  # noqa: E402  (bench/ is scripts, not a package: importable once on the path)

MACHINE = {"nproc": 2, "cpu": "AMD EPYC", "ram_gib": 23.5}
GET = quick.Figure("inv.get", "GET", "ms", lambda r: r["get"], target=30)
SERVED = quick.Figure("hb.served", "served", "/s", lambda r: r["served"], target=316, better="higher")
P99 = quick.Figure("hb.p99", "p99", "ms", lambda r: r["p99"], target=250, judged=False)


def record(started_at: str, figures: dict, *, accepted: bool = True, machine: dict = MACHINE) -> dict:
    return {"started_at": started_at, "machine": machine, "accepted": accepted, "figures": figures}


def test_worse_ratio_is_above_one_when_worse_whichever_way_is_better():
    assert quick.worse_ratio(60.0, 10.0) == 6.0  # lower is better: 6 times slower
    assert quick.worse_ratio(5.0, 10.0) == 0.5
    assert quick.worse_ratio(100.0, 300.0, better="higher") == 3.0  # a third of the rate
    assert quick.worse_ratio(600.0, 300.0, better="higher") == 0.5
    assert quick.worse_ratio(10.0, None) is None  # nothing recorded yet
    assert quick.worse_ratio(None, 10.0) is None  # the benchmark failed
    assert quick.worse_ratio(0.0, 0.0) is None
    assert quick.worse_ratio(1.0, 0.0) == float("inf")


def test_a_six_times_slowdown_is_flagged_and_noise_is_not():
    slow = quick.Row(GET, value=240.0, last=40.0)
    assert slow.ratio == 6.0
    assert slow.regressed(2.0)
    assert not quick.Row(GET, value=70.0, last=40.0).regressed(2.0)  # 1.75 times: within the threshold
    assert quick.Row(GET, value=70.0, last=40.0).regressed(1.5)
    assert quick.Row(SERVED, value=50.0, last=333.0).regressed(2.0)
    assert not quick.Row(GET, value=240.0, last=None).regressed(2.0)


def test_tail_latencies_are_shown_but_not_judged():
    row = quick.Row(P99, value=1200.0, last=10.0)
    assert row.ratio == 120.0
    assert not row.regressed(2.0)
    assert row.met is False


def test_target_met_or_missed_in_the_figures_direction():
    assert quick.Row(GET, value=29.0, last=None).met is True
    assert quick.Row(GET, value=31.0, last=None).met is False
    assert quick.Row(SERVED, value=320.0, last=None).met is True
    assert quick.Row(SERVED, value=300.0, last=None).met is False
    no_target = quick.Figure("x", "x", "s", lambda r: 1.0)
    assert quick.Row(no_target, value=1.0, last=None).met is None
    assert quick.Row(GET, value=None, last=None).met is None


def test_the_baseline_is_the_newest_accepted_record_of_this_machine_per_figure():
    records = [
        record("2026-12-05T10:00:00+00:00", {"inv.get": 40.0, "hb.served": 333.0}),
        record("2026-12-05T12:00:00+00:00", {"inv.get": 45.0}),  # an --only inventory run
        record("2026-12-05T13:00:00+00:00", {"inv.get": 400.0}, accepted=False),  # flagged, not accepted
        record("2026-12-05T14:00:00+00:00", {"inv.get": 9.0}, machine={"nproc": 2, "cpu": "Intel(R) Xeon"}),
        record("2026-12-05T11:00:00+00:00", {"inv.get": 41.0, "hb.served": None}),  # out of order
    ]
    assert quick.baseline_values(records, MACHINE) == {"inv.get": 45.0, "hb.served": 333.0}
    assert quick.baseline_values(records, {"nproc": 4, "cpu": "AMD EPYC"}) == {}


def test_compare_gives_a_row_per_figure_measured():
    rows = quick.compare([GET, SERVED, P99], {"inv.get": 240.0, "hb.served": None}, {"inv.get": 40.0})
    assert [(row.figure.key, row.value, row.last) for row in rows] == [
        ("inv.get", 240.0, 40.0),
        ("hb.served", None, None),
    ]


def test_the_table_shows_value_target_last_ratio_and_flags():
    rows = [
        quick.Row(GET, value=240.0, last=40.0),
        quick.Row(SERVED, value=333.0, last=None),
        quick.Row(P99, value=9.2, last=4.0),
    ]
    lines = quick.table(rows, 2.0).splitlines()
    assert lines[0].split() == ["figure", "value", "target", "last", "ratio"]
    get, served, p99 = lines[2:]
    assert get.startswith("inv.get  GET")
    for cell in ("240 ms", "≤ 30 ms MISSED", "40", "6.00×", "REGRESSION (> 2× worse)"):
        assert cell in get
    for cell in ("333 /s", "≥ 316 /s ok", "–"):
        assert cell in served
    assert "REGRESSION" not in served
    assert "2.30×" in p99 and "(not judged)" in p99 and "REGRESSION" not in p99
    # one column each: the ratio column starts at the same place on every row
    assert len({line.index("×") for line in (get, p99)}) == 1


def test_numbers_keep_a_few_significant_digits():
    assert quick.number(None) == "–"
    assert quick.number(3.0, "") == "3"
    assert quick.number(2.333, "ms") == "2.33 ms"
    assert quick.number(42.16, "MiB") == "42.2 MiB"
    assert quick.number(408.4, "ms") == "408 ms"


def test_records_go_to_the_months_history_and_the_latest(tmp_path):
    first = {**record("2026-12-05T10:00:00+00:00", {"inv.get": 40.0}), "benchmark": "quick"}
    second = {**record("2026-12-06T10:00:00+00:00", {"inv.get": 42.0}), "benchmark": "quick"}
    path = quick.write_record(first, tmp_path)
    assert quick.write_record(second, tmp_path) == path == tmp_path / "quick-2026-12.jsonl"
    assert len(path.read_text().splitlines()) == 2  # one line a run: git merges it line by line
    assert json.loads((tmp_path / quick.LATEST).read_text()) == second
    assert quick.read_records(tmp_path) == [first, second]
    assert quick.history_path(dt.datetime(2027, 1, 2), tmp_path).name == "quick-2027-01.jsonl"


@pytest.mark.parametrize(
    ("name", "report"),
    [
        ("inventory", "inventory-2026-12-05-quick-after.json"),
        ("heartbeat", "heartbeat-2026-12-05-run-prod-after.json"),
        ("fanout", "fanout-2026-12-05-quick.json"),
        ("discovery", "discovery-2026-12-05.json"),
        ("failover", "failover-2026-12-05-serve-after.json"),
    ],
)
def test_every_figure_reads_a_number_from_its_benchmarks_report(name, report):
    """The figures' paths into each benchmark's JSON, checked on a committed report of that benchmark."""
    benchmark = next(b for b in quick.BENCHMARKS if b.name == name)
    values = quick.read_figures(benchmark, json.loads((BENCH / "results" / report).read_text()))
    assert set(values) == {figure.key for figure in benchmark.figures}
    assert all(isinstance(value, float) for value in values.values()), values


def test_a_failed_benchmark_gives_no_figures():
    benchmark = next(b for b in quick.BENCHMARKS if b.name == "inventory")
    assert set(quick.read_figures(benchmark, None).values()) == {None}
    assert set(quick.read_figures(benchmark, {"results": {}}).values()) == {None}
