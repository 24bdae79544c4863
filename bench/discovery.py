"""Discovery sweep: time and peak RSS of a scan of a /20 and a /16 on loopback with a few responders,
our scanner before and after the stateless sweep side by side with `onesixtyone` on the same targets
and community.

    .venv/bin/python bench/discovery.py                      # /20 and /16, each tool once
    .venv/bin/python bench/discovery.py --repeat 3           # the figures in bench/README.md
    .venv/bin/python bench/discovery.py --sizes 20 --tools after,onesixtyone   # a quick check

One net-snmp snmpd (its own config in a temp dir) answers on three addresses of each range
(127.78.0.0/20 and 127.77.0.0/16, first, middle and last but one) at a free UDP port; everything else
there is silent. Each scan runs in a process of its own under GNU time (`/usr/bin/time`: wall and CPU
seconds, the process's peak RSS). The tools:

- `after`: the scanner of this checkout (`snmp.scanner.scan`) as the agent runs it: the child
  imports `agent.runner` first, so the agent's modules count in the RSS (the child reports that
  baseline too). Seeds: v2c, and v3 authPriv (SHA/AES) with `--v3`.
- `before`: the scanner of `--before` (default: the commit before snmp/sweep.py came), exported with
  `git archive` to a temp dir: one pysnmp engine, `--before-concurrency` addresses at once (1,024, its
  fastest; the issue's figures). It holds memory per address: on a /16 it takes minutes and more than a
  gigabyte, so it runs there only with `--before-16`.
- `onesixtyone` (Debian package; `make system-packages`): v1 GET of sysDescr to every address with
  `-w 0` (no wait between packets), then its own fixed wait for answers (about 5 s).

Our scans use `--timeout` (1 s, the issue's figures) and `--retries` (0); a last row per range uses the
seed defaults (timeout 5 s, retries 1). Every run checks the responders found: the table shows them.
Results: bench/results/discovery-<date>.json (machine, load, commit, every run). Only 127.0.0.0/8 is
contacted; no database is used.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from common import ROOT, code_version, end_on_sigterm, machine, write_report

COMMUNITY = "bench-ro"
V3 = {
    "version": 3,
    "type": "usm",
    "securityName": "bench-v3",
    "securityLevel": "authPriv",
    "authProtocol": "SHA",
    "authPassphrase": "bench-auth-1",
    "privProtocol": "AES",
    "privPassphrase": "bench-priv-1",
}
RANGES = {  # prefix length → (targets, responders)
    20: ("127.78.0.0/20", ("127.78.0.1", "127.78.8.8", "127.78.15.254")),
    16: ("127.77.0.0/16", ("127.77.0.1", "127.77.128.128", "127.77.255.254")),
}
TIME = "/usr/bin/time"
MEDIANS = ("wall_s", "scan_s", "cpu_s", "peak_rss_mib", "baseline_rss_mib")
ROW = "{:6} {:20} {:>7} {:>7} {:>6} {:>9} {:>9}  {}"

# The child that scans: prints one JSON line. argv: targets, config JSON, port, timeout, retries,
# concurrency. The agent's imports first (its RSS baseline), then the scan.
SCAN_CHILD = """
import asyncio, json, sys, time
def peak_kib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
try:
    import agent.runner  # noqa: F401  (after: what the agent process holds anyway)
except ImportError:
    pass
from snmp.scanner import scan
baseline = peak_kib()
targets, config, port, timeout, retries, concurrency = sys.argv[1:7]
started = time.monotonic()
result = asyncio.run(scan([targets], [json.loads(config)], port=int(port), timeout=float(timeout),
                          retries=int(retries), concurrency=int(concurrency)))
print(json.dumps({"scan_s": time.monotonic() - started, "baseline_kib": baseline,
                  "found": sorted(d.address for d in result.devices), "scanned": result.targets_scanned}))
"""


def snmpd_config() -> str:
    return "\n".join(
        [
            f"rocommunity {COMMUNITY} 127.0.0.0/8",
            f'createUser {V3["securityName"]} SHA "{V3["authPassphrase"]}" AES "{V3["privPassphrase"]}"',
            f"rouser {V3['securityName']} priv",
            "sysName bench-device",
            "",
        ]
    )


def free_udp_port(addresses: list[str]) -> int:
    while True:
        port = random.randint(20000, 60000)
        sockets = []
        try:
            for address in addresses:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sockets.append(sock)
                sock.bind((address, port))
            return port
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()


def answers(address: str, port: int) -> bool:
    command = ["snmpget", "-v2c", "-c", COMMUNITY, "-t", "0.3", "-r", "0", "-On", "-Ln"]
    done = subprocess.run(
        [*command, f"udp:{address}:{port}", "1.3.6.1.2.1.1.5.0"],
        capture_output=True,
        env={**os.environ, "MIBS": ""},
        check=False,
    )
    return done.returncode == 0


@contextmanager
def snmpd(addresses: list[str], tmp: Path):
    """One snmpd answering on every address; yields its port."""
    binary = shutil.which("snmpd") or "/usr/sbin/snmpd"
    if not os.path.exists(binary) or not shutil.which("snmpget"):
        raise SystemExit("snmpd and snmpget are missing: `make system-packages` installs them")
    (tmp / "snmpd.conf").write_text(snmpd_config())
    (tmp / "persist").mkdir(exist_ok=True)
    port = free_udp_port(addresses)
    listen = ",".join(f"udp:{address}:{port}" for address in addresses)
    with (tmp / "snmpd.log").open("w") as log:
        process = subprocess.Popen(
            [binary, "-f", "-Lo", "-C", "-c", str(tmp / "snmpd.conf"), "-I", "-smux", listen],
            env={**os.environ, "SNMP_PERSISTENT_DIR": str(tmp / "persist"), "MIBS": ""},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 15
        while not all(answers(address, port) for address in addresses):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"snmpd did not start:\n{(tmp / 'snmpd.log').read_text()[-2000:]}")
            time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def before_commit() -> str:
    """The commit before snmp/sweep.py was added (HEAD when it is not in the history yet)."""
    added = subprocess.run(
        ["git", "log", "--diff-filter=A", "--format=%H", "--", "snmp/sweep.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return f"{added[-1]}^" if added else "HEAD"


def export_before(commit: str, into: Path) -> str:
    """snmp/ of `commit` in `into`; returns the commit's hash."""
    resolved = subprocess.run(
        ["git", "rev-parse", commit], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    archive = subprocess.run(["git", "archive", resolved, "snmp"], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return resolved


def timed(command: list[str], *, env: dict[str, str], cwd: Path) -> tuple[dict, str]:
    """Run under GNU time: wall, user and system seconds, peak RSS (KiB); and the command's stdout."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as stats:
        done = subprocess.run(
            [TIME, "-o", stats.name, "-f", "%e %U %S %M", *command],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{command[0]} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        wall, user, system, peak = stats.read().split()[-4:]
    return {
        "wall_s": float(wall),
        "cpu_s": round(float(user) + float(system), 2),
        "peak_rss_mib": round(int(peak) / 1024, 1),
    }, done.stdout


def child_env(pythonpath: Path) -> dict[str, str]:
    drop = {"DJANGO_SETTINGS_MODULE", "DATABASE_URL"}  # the agent runs without the manager's settings
    env = {key: value for key, value in os.environ.items() if key not in drop}
    env["PYTHONPATH"] = str(pythonpath)
    return env


def run_python(
    snmp_root: Path, targets: str, config: dict, port: int, timeout: float, retries: int, concurrency: int
) -> dict:
    command = [sys.executable, "-c", SCAN_CHILD, targets, json.dumps(config), str(port)]
    command += [str(timeout), str(retries), str(concurrency)]
    # The before export has snmp/ only: agent/ is not importable there, and the child skips it.
    stats, out = timed(command, env=child_env(snmp_root), cwd=snmp_root)
    report = json.loads(out.strip().splitlines()[-1])
    return {
        **stats,
        "scan_s": round(report["scan_s"], 2),
        "baseline_rss_mib": round(report["baseline_kib"] / 1024, 1),
        "found": report["found"],
        "scanned": report["scanned"],
    }


def run_onesixtyone(targets: str, port: int, tmp: Path) -> dict:
    binary = shutil.which("onesixtyone")
    if binary is None:
        raise SystemExit("onesixtyone is missing: `make system-packages` installs it")
    command = [binary, "-p", str(port), "-w", "0", targets, COMMUNITY]
    stats, out = timed(command, env=dict(os.environ), cwd=tmp)
    found = sorted({line.split()[0] for line in out.splitlines() if f"[{COMMUNITY}]" in line})
    return {**stats, "found": found}


def build_plan(args, tools: list[str], size: int, targets: str, port: int, before_root: Path, tmp: Path):
    """(name, run) in the order they alternate."""
    v2c = {"version": 2, "readCommunity": COMMUNITY}
    ours = {"timeout": args.timeout, "retries": args.retries}

    def python(root: Path, config: dict, timeout: float, retries: int, concurrency: int):
        return lambda: run_python(root, targets, config, port, timeout, retries, concurrency)

    plan = []
    for tool in tools:
        if tool == "before" and (size >= 20 or args.before_16):
            plan.append(("before", python(before_root, v2c, **ours, concurrency=args.before_concurrency)))
        elif tool == "after":
            plan.append(("after", python(ROOT, v2c, **ours, concurrency=args.concurrency)))
            if args.v3:
                plan.append(("after-v3", python(ROOT, V3, **ours, concurrency=args.concurrency)))
        elif tool == "onesixtyone":
            plan.append(("onesixtyone", lambda: run_onesixtyone(targets, port, tmp)))
    if "after" in tools and not args.no_defaults:
        plan.append(("after-seed-defaults", python(ROOT, v2c, 5.0, 1, args.concurrency)))
    return plan


def median(runs: list[dict], key: str) -> float | None:
    values = [run[key] for run in runs if run.get(key) is not None]
    return round(statistics.median(values), 2) if values else None


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="20,16", help="prefix lengths to sweep (20, 16)")
    parser.add_argument("--tools", default="before,after,onesixtyone", help="which scanners, in turn")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each (alternating tools)")
    parser.add_argument("--timeout", type=float, default=1.0, help="our timeout, seconds (1)")
    parser.add_argument("--retries", type=int, default=0, help="our retries (0)")
    parser.add_argument("--v3", action="store_true", help="also an after run with a v3 authPriv seed")
    parser.add_argument("--no-defaults", action="store_true", help="skip the seed-defaults row")
    parser.add_argument("--before", default=None, help="the commit of the before scanner")
    parser.add_argument("--before-concurrency", type=int, default=1024, help="its concurrency (1024)")
    parser.add_argument("--before-16", action="store_true", help="run the before scanner on the /16 too")
    parser.add_argument("--concurrency", type=int, default=50, help="after: full GETs at once (50)")
    parser.add_argument("--out", metavar="FILE", help="results JSON (bench/results/discovery-<date>.json)")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    tools = args.tools.split(",")
    if not os.path.exists(TIME):
        raise SystemExit("GNU time (/usr/bin/time) is missing: `make system-packages` installs it")

    end_on_sigterm()
    started_at = dt.datetime.now(dt.UTC)
    try:
        info = machine()
    except Exception:  # PostgreSQL is not needed here; machine() asks it for its version
        info = {"nproc": os.cpu_count()}
    info["load_at_start"] = os.getloadavg()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="promsnmp-discovery-") as tmp_name:
        tmp = Path(tmp_name)
        before_root = tmp / "before"
        before_root.mkdir()
        before = export_before(args.before or before_commit(), before_root) if "before" in tools else None
        responders = [address for size in sizes for address in RANGES[size][1]]
        with snmpd(responders, tmp) as port:
            for size in sizes:
                targets, expected = RANGES[size]
                plan = build_plan(args, tools, size, targets, port, before_root, tmp)
                runs: dict[str, list[dict]] = {name: [] for name, _ in plan}
                for repeat in range(args.repeat):
                    for name, run in plan:
                        outcome = run()
                        outcome["load"] = os.getloadavg()[0]
                        outcome["found_all"] = outcome["found"] == sorted(expected)
                        runs[name].append(outcome)
                        print(
                            f"/{size} {name} #{repeat + 1}: {outcome['wall_s']} s, "
                            f"{outcome['peak_rss_mib']} MiB, cpu {outcome['cpu_s']} s, "
                            f"found {len(outcome['found'])} ({'all' if outcome['found_all'] else 'NOT all'})",
                            file=sys.stderr,
                        )
                results[f"/{size}"] = {
                    "targets": targets,
                    "responders": list(expected),
                    "runs": runs,
                    "medians": {
                        name: {key: median(items, key) for key in MEDIANS} for name, items in runs.items()
                    },
                }
    info["load_at_end"] = os.getloadavg()
    out = write_report(
        benchmark="discovery",
        started_at=started_at,
        info=info,
        parameters={**{k: v for k, v in vars(args).items() if k != "out"}, "before_commit": before},
        extra={"after_code": code_version()},
        results=results,
        out=args.out,
    )
    header = ("range", "scanner", "wall s", "scan s", "cpu s", "peak MiB", "(imports)", "found")
    print("\n" + ROW.format(*header))
    for size_key, block in results.items():
        for name, items in block["runs"].items():
            medians = block["medians"][name]
            found = "all" if all(run["found_all"] for run in items) else "NOT all"
            print(ROW.format(size_key, name, *(medians[key] or "" for key in MEDIANS), found))
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
