"""Helpers for the agent's end-to-end tests: a manager on a port chosen by the test (so that it can be
stopped and started again where the agent expects it), and the agent CLI as a subprocess."""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.e2e.servers import ROOT, serve

AGENT_DROP_ENV = {
    "DJANGO_SETTINGS_MODULE",
    "DATABASE_URL",
    "SECRET_KEY",
    "FIELD_ENCRYPTION_KEYS",
    "REDIS_URL",
}


def serve_on(port: int, env: dict[str, str] | None = None):
    """servers.serve() on a given port: a second one started after the first stopped is the same manager
    to its instances (same URL, same database)."""
    return serve(env=env, port=port)


def agent_env() -> dict[str, str]:
    """The environment of a machine without the manager: no Django settings, no database."""
    return {key: value for key, value in os.environ.items() if key not in AGENT_DROP_ENV}


def start_agent_cli(
    base_url: str, token: str, site: str, hostname: str, log_path: Path, *extra: str
) -> subprocess.Popen:
    """`python -m agent` against `base_url`, logging (DEBUG) to `log_path`."""
    with log_path.open("w") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agent",
                "--url",
                base_url,
                "--site",
                site,
                "--hostname",
                hostname,
                "--loopback-only",
                "--progress-interval",
                "0.1",
                "--log-level",
                "DEBUG",
                *extra,
            ],
            cwd=ROOT,
            env={**agent_env(), "PROMSNMP_TOKEN": token, "PYTHONUNBUFFERED": "1"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def stop_agent(agent: subprocess.Popen, log_path: Path, timeout: float = 15) -> int:
    """SIGTERM, and the exit code within `timeout` (else kill and raise); the agent's log goes to stderr."""
    if agent.poll() is None:
        agent.send_signal(signal.SIGTERM)
    try:
        return agent.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        agent.kill()
        raise
    finally:
        print(log_path.read_text()[-6000:], file=sys.stderr)


def wait_until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")


class LoopbackProxy:
    """A TCP proxy on 127.0.0.1 in front of the manager: each connection's first read is handed to
    `relay`, which decides what the client gets; subclasses say how a reply goes wrong."""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._closed = True
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=30)
        except OSError:
            client.close()
            return
        first = client.recv(65536)
        upstream.sendall(first)
        self.relay(client, upstream, first)

    def relay(self, client, upstream, first: bytes) -> None:
        """After the first read went upstream: everything relayed as is."""
        self._pump(client, upstream)

    @staticmethod
    def _pump(client, upstream, one_way: bool = False) -> None:
        """Relay both ways until either side closes (one_way: only the rest of the request, if any)."""
        client.settimeout(None)
        upstream.settimeout(None)
        selector = selectors.DefaultSelector()
        selector.register(client, selectors.EVENT_READ, upstream)
        if not one_way:
            selector.register(upstream, selectors.EVENT_READ, client)
        try:
            while True:
                events = selector.select(timeout=0.5 if one_way else None)
                if not events:
                    return  # (one_way) the request is complete: nothing more comes from the client
                for key, _ in events:
                    data = key.fileobj.recv(65536)
                    if not data:
                        return
                    key.data.sendall(data)
        except OSError:
            return
        finally:
            selector.close()
            if not one_way:
                client.close()
                upstream.close()


class LossyProxy(LoopbackProxy):
    """Loses the answer to the first request whose first line starts with `drop_first` (e.g. `POST
    /api/v1/sites/x/inventory/devices`): the request reaches the manager and is applied, the manager's
    answer is read and thrown away, and the client's connection is closed. What a client sees when a
    network drops a reply. Everything else (the REST calls, the WebSocket) is relayed as is."""

    def __init__(self, upstream_port: int, drop_first: str):
        self.drop_first = drop_first.encode()
        self.dropped = 0
        super().__init__(upstream_port)

    def relay(self, client, upstream, first: bytes) -> None:
        with self._lock:
            drop = first.startswith(self.drop_first) and self.dropped == 0
            if drop:
                self.dropped += 1
        if not drop:
            self._pump(client, upstream)
            return
        self._pump(client, upstream, one_way=True)
        with contextlib.suppress(OSError):
            while upstream.recv(65536):  # the manager's answer, read to the end and lost
                pass
        client.close()
        upstream.close()


class CuttingProxy(LoopbackProxy):
    """While `cutting` is set, cuts short the answer to every request whose first line starts with
    `cut_prefix` (e.g. `GET /api/v1/sites/x/inventory?format=promsnmp`): the request reaches the manager,
    which answers in full; the client gets the status line, the headers and half of the body, then the
    connection closes. What a client sees when a transfer breaks off. `cut` counts the answers cut.
    Everything else (the REST calls, the WebSocket) is relayed as is."""

    def __init__(self, upstream_port: int, cut_prefix: str):
        self.cut_prefix = cut_prefix.encode()
        self.cutting = False
        self.cut = 0
        super().__init__(upstream_port)

    def relay(self, client, upstream, first: bytes) -> None:
        if not (self.cutting and first.startswith(self.cut_prefix)):
            self._pump(client, upstream)
            return
        answer = b""
        with contextlib.suppress(OSError):
            while True:  # the client asked for "Connection: close" (urllib does): read to the end
                data = upstream.recv(65536)
                if not data:
                    break
                answer += data
        head, _, body = answer.partition(b"\r\n\r\n")
        with contextlib.suppress(OSError):
            client.sendall(head + b"\r\n\r\n" + body[: len(body) // 2])
        with self._lock:
            self.cut += 1
        client.close()
        upstream.close()


# Bridge mode as the e2e tests run it: heartbeats every second, the leader looks at its PromSNMP twice a
# second, retries after at most 2 s (the defaults are 30 s, 30 s and 300 s).
BRIDGE_TIMINGS = (
    "--heartbeat-interval",
    "1",
    "--promsnmp-poll-interval",
    "0.5",
    "--backoff-base",
    "0.2",
    "--backoff-cap",
    "2",
)


def start_bridge(
    base_url: str, token: str, site: str, hostname: str, log_path: Path, promsnmp_url: str, state_dir: Path
) -> subprocess.Popen:
    """`python -m agent` in bridge mode beside the PromSNMP (stand-in) at `promsnmp_url`."""
    return start_agent_cli(
        base_url,
        token,
        site,
        hostname,
        log_path,
        "--promsnmp-url",
        promsnmp_url,
        "--state-dir",
        str(state_dir),
        *BRIDGE_TIMINGS,
    )
