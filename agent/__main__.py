"""`promsnmp-agent` (or `python -m agent`): run one reference PromSNMP instance against a manager.

    PROMSNMP_TOKEN=psm_… promsnmp-agent --url http://127.0.0.1:8000 --site chicago-pop-01 --hostname lab-1

The token comes from the environment (PROMSNMP_TOKEN), not the command line, which other users of the
machine can read. SIGTERM or Ctrl-C deregisters the instance and exits. `--loopback-only` refuses any
seed target outside 127.0.0.0/8 (tests, demos and load tests use it).

A manager that is down or overloaded is waited for: registration, heartbeats, the event socket and
the posting of discovery results retry with exponential backoff (`--backoff-base` 1 s doubling up to
`--backoff-cap` 300 s, full jitter). Discovery results wait in `--state-dir` (a SQLite file; one
directory per instance) until the manager has them, across restarts of the agent.
Exit status: 0 after SIGTERM or Ctrl-C, 1 when the manager refuses the token or the site for good.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys

from agent.backoff import DEFAULT_BASE, DEFAULT_CAP
from agent.client import ManagerClient
from agent.runner import Agent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="promsnmp-agent", description=__doc__.split("\n\n")[0])
    env = os.environ.get
    parser.add_argument(
        "--url", default=env("PROMSNMP_MANAGER_URL"), help="the manager, e.g. http://host:8000"
    )
    parser.add_argument("--site", default=env("PROMSNMP_SITE_ID"), help="the site id to register in")
    parser.add_argument("--hostname", default=env("PROMSNMP_HOSTNAME") or socket.gethostname())
    parser.add_argument("--pod-name", default=env("PROMSNMP_POD_NAME", ""))
    parser.add_argument("--version", default="0.1.0", help="the version reported at registration")
    parser.add_argument(
        "--heartbeat-interval", type=float, default=None, help="seconds (default: the site config's)"
    )
    parser.add_argument(
        "--progress-interval", type=float, default=1.0, help="seconds between progress frames"
    )
    parser.add_argument(
        "--loopback-only",
        action="store_true",
        default=env("PROMSNMP_LOOPBACK_ONLY", "") not in ("", "0", "false"),
        help="scan only 127.0.0.0/8 (a seed with other targets fails)",
    )
    parser.add_argument(
        "--state-dir",
        default=env("PROMSNMP_STATE_DIR") or None,
        help="where queued discovery results are kept (default: in memory, lost on restart)",
    )
    parser.add_argument(
        "--backoff-base", type=float, default=DEFAULT_BASE, help="seconds before the first retry (at most)"
    )
    parser.add_argument(
        "--backoff-cap", type=float, default=DEFAULT_CAP, help="the longest wait between retries, seconds"
    )
    parser.add_argument("--log-level", default=env("PROMSNMP_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    if not args.url or not args.site:
        parser.error("--url and --site are required (or PROMSNMP_MANAGER_URL and PROMSNMP_SITE_ID)")
    if not 0 < args.backoff_base <= args.backoff_cap:
        parser.error("--backoff-base must be above 0 and at most --backoff-cap")
    if not env("PROMSNMP_TOKEN"):
        parser.error("set PROMSNMP_TOKEN to an instance token of the site")
    return args


async def _main(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    agent = Agent(
        ManagerClient(args.url, os.environ["PROMSNMP_TOKEN"]),
        site_id=args.site,
        hostname=args.hostname,
        pod_name=args.pod_name,
        version=args.version,
        allow_non_loopback=not args.loopback_only,
        heartbeat_interval=args.heartbeat_interval,
        progress_interval=args.progress_interval,
        backoff_base=args.backoff_base,
        backoff_cap=args.backoff_cap,
        state_dir=args.state_dir,
    )
    await agent.run(stop)
    return 1 if agent.fatal else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
