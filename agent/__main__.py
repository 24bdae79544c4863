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

Bridge mode, beside an unmodified PromSNMP (agent.bridge; docs/promsnmp.md):

    PROMSNMP_TOKEN=psm_… promsnmp-agent --url http://manager:8000 --site chicago-pop-01 \
        --promsnmp-url http://127.0.0.1:8080 --state-dir /var/lib/promsnmp-bridge

keeps that PromSNMP's inventory equal to the site's (never posting a document that is not whole and
current), registers its scrape address (`--scrape-address`, default the host:port of --promsnmp-url),
and as the leader sends what PromSNMP found by itself to the manager.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import signal
import socket
import sys

from agent.backoff import DEFAULT_BASE, DEFAULT_CAP
from agent.bridge import DEFAULT_POLL_INTERVAL, Bridge, PromSnmpClient, scrape_address_of
from agent.client import ManagerClient
from agent.runner import Agent
from snmp.sweep import RATE as SWEEP_RATE

# host:port, the host a DNS name, an IPv4 address or a bracketed IPv6 address (the manager checks more).
_SCRAPE_ADDRESS = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?):[0-9]{1,5}$")


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
        "--discovery-rate",
        type=float,
        default=env("PROMSNMP_DISCOVERY_RATE") or SWEEP_RATE,  # a string is parsed as the option
        help=f"requests per second of a discovery sweep, at most (default {SWEEP_RATE:,})",
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
    parser.add_argument(
        "--promsnmp-url",
        default=env("PROMSNMP_URL") or None,
        help="bridge mode: the PromSNMP to keep in sync, e.g. http://127.0.0.1:8080",
    )
    parser.add_argument(
        "--scrape-address",
        default=env("PROMSNMP_SCRAPE_ADDRESS") or None,
        help="host:port where Prometheus scrapes this instance (default: that of --promsnmp-url)",
    )
    parser.add_argument(
        "--promsnmp-poll-interval",
        type=float,
        default=DEFAULT_POLL_INTERVAL,
        help="bridge mode: seconds between the leader's looks at what PromSNMP found by itself",
    )
    parser.add_argument("--log-level", default=env("PROMSNMP_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    if not args.url or not args.site:
        parser.error("--url and --site are required (or PROMSNMP_MANAGER_URL and PROMSNMP_SITE_ID)")
    if not 0 < args.backoff_base <= args.backoff_cap:
        parser.error("--backoff-base must be above 0 and at most --backoff-cap")
    if not env("PROMSNMP_TOKEN"):
        parser.error("set PROMSNMP_TOKEN to an instance token of the site")
    if args.promsnmp_url is not None:
        if not args.promsnmp_url.startswith(("http://", "https://")):
            parser.error("--promsnmp-url must be an http:// or https:// URL")
        try:
            args.scrape_address = args.scrape_address or scrape_address_of(args.promsnmp_url)
        except ValueError as exc:
            parser.error(f"--promsnmp-url: {exc}")
    if args.scrape_address and not _SCRAPE_ADDRESS.match(args.scrape_address):
        parser.error("--scrape-address must be host:port")
    if not args.discovery_rate > 0:
        parser.error("--discovery-rate must be above 0")
    if args.promsnmp_poll_interval <= 0:
        parser.error("--promsnmp-poll-interval must be above 0")
    return args


async def _main(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    client = ManagerClient(args.url, os.environ["PROMSNMP_TOKEN"])
    bridge = None
    if args.promsnmp_url:
        if not args.state_dir:
            logging.getLogger("promsnmp.agent").warning(
                "bridge mode without --state-dir: a restart forgets which inventory PromSNMP holds"
            )
        bridge = Bridge(
            client,
            PromSnmpClient(args.promsnmp_url),
            site_id=args.site,
            state_dir=args.state_dir,
            poll_interval=args.promsnmp_poll_interval,
        )
    agent = Agent(
        client,
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
        bridge=bridge,
        scrape_address=args.scrape_address or "",
        discovery_rate=args.discovery_rate,
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
