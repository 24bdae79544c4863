"""Real server processes for end-to-end tests: `manage.py serve` (daphne) on a free loopback port."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import requests
from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url(name: str | None = None) -> str:
    """A URL for the configured PostgreSQL server: by default the database pytest-django created."""
    db = settings.DATABASES["default"]
    user, host, port = db.get("USER") or "postgres", db.get("HOST") or "127.0.0.1", db.get("PORT") or 5432
    return f"postgres://{user}@{host}:{port}/{name or db['NAME']}"


def wait_ready(base_url: str, process: subprocess.Popen, log_path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
        try:
            if requests.get(f"{base_url}/health/ready", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server not ready after {timeout} s:\n{log_path.read_text()[-4000:]}")


@contextmanager
def server_process(command: list[str], env: dict[str, str] | None = None, port: int | None = None, cwd=ROOT):
    """Start a server command (its HOST and PORT from the environment) on the test database, on `port` or
    a free one; yields (base_url, process) once /health/ready answers. Stopped (process group) on exit;
    its output is printed when the test fails, and kept as `process.server_log` for assertions after."""
    port = port or free_port()
    process_env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "PYTHONUNBUFFERED": "1",
    }
    process_env.pop("REDIS_URL", None)
    process_env.update(env or {})
    with tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False) as log:
        log_path = Path(log.name)
        process = subprocess.Popen(
            command, cwd=cwd, env=process_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base_url, process, log_path)
        yield base_url, process
    except BaseException:
        # A failing test shows what the server said (pytest prints captured stderr with the failure).
        print(
            f"--- server log ({base_url}: {' '.join(command[1:4])}) ---\n{log_path.read_text()[-6000:]}",
            file=sys.stderr,
        )
        raise
    finally:
        stop(process)
        process.server_log = log_path.read_text()
        log_path.unlink(missing_ok=True)


def serve(
    env: dict[str, str] | None = None,
    args: list[str] | None = None,
    cwd: Path = ROOT,
    port: int | None = None,
):
    """`manage.py serve` (daphne: the embedded default, or the WebSocket server with --no-beat)."""
    return server_process([sys.executable, "manage.py", "serve", *(args or [])], env, port, cwd)


def gunicorn(env: dict[str, str] | None = None, workers: int = 2):
    """gunicorn as production runs it (run_prod's worker class and options)."""
    from config.run_prod import gunicorn_arguments

    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "config.wsgi", "--bind", f"127.0.0.1:{port}"]
    # gunicorn 27 would also open a control socket at a per-user path
    command += ["--workers", str(workers), *gunicorn_arguments(), "--no-control-socket"]
    return server_process(command, env, port)


@contextmanager
def celery_worker(env: dict[str, str]):
    """A Celery worker process on the test database, as run_prod starts one (named after its queue, no
    gossip or mingle) but with one process (`--pool solo`). `env` gives REDIS_URL (the broker) and
    CELERY_QUEUE; a worker needs no readiness check: what is queued waits for it. Yields the process,
    whose output so far is in the file `process.log_path`."""
    queue = env.get("CELERY_QUEUE", "celery")
    command = [sys.executable, "-m", "celery", "-A", "config", "worker", "--hostname", f"{queue}@%h"]
    command += ["--without-gossip", "--without-mingle", "--pool", "solo", "--loglevel", "INFO"]
    process_env = {**os.environ, "DATABASE_URL": database_url(), "PYTHONUNBUFFERED": "1", **env}
    with tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False) as log:
        log_path = Path(log.name)
        process = subprocess.Popen(
            command, cwd=ROOT, env=process_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    process.log_path = log_path
    try:
        yield process
    finally:
        stop(process)
        process.server_log = log_path.read_text()
        log_path.unlink(missing_ok=True)


def manage(command: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a management command in a process of its own on the test database (no Redis unless given)."""
    process_env = {**os.environ, "DATABASE_URL": database_url(), **(env or {})}
    if not (env or {}).get("REDIS_URL"):
        process_env.pop("REDIS_URL", None)
    return subprocess.run(
        [sys.executable, "manage.py", command, *args],
        cwd=ROOT,
        env=process_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def delete_redis_keys(url: str, match: str) -> None:
    """Remove a test's own keys (a channel-layer prefix, a Celery queue) from a shared Redis database."""
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=match, count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def websocket_url(base_url: str, instance_id: str, token: str) -> str:
    """The event socket of a server started by serve(), for one instance."""
    return f"ws{base_url.removeprefix('http')}/api/v1/ws?instanceId={instance_id}&token={token}"


def stop(process: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM to the process group; SIGKILL if it is still there after `timeout` seconds."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


class EventSocket:
    """A real WebSocket client (the `websockets` package) on an instance's event socket.

    Every frame read is kept in `frames` as (arrival time on time.monotonic(), frame); the client reads in
    a background thread, so an arrival time is at most the moment the test looked.
    """

    def __init__(self, url: str):
        from websockets.sync.client import connect

        self.connection = connect(url, open_timeout=10, close_timeout=2, max_size=None, legacy=True)
        self.frames: list[tuple[float, dict]] = []
        self._taken: set[int] = set()

    def receive(self, timeout: float) -> dict | None:
        """The next frame, or None when none came within `timeout` seconds."""
        try:
            text = self.connection.recv(timeout=timeout)
        except TimeoutError:
            return None
        frame = json.loads(text)
        self.frames.append((time.monotonic(), frame))
        return frame

    def wait_for(self, event_type: str, timeout: float) -> tuple[dict, float]:
        """The first frame of that type not returned before, and when it arrived."""
        deadline = time.monotonic() + timeout
        while True:
            for index, (arrived, frame) in enumerate(self.frames):
                if index not in self._taken and frame.get("type") == event_type:
                    self._taken.add(index)
                    return frame, arrived
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"no {event_type} within {timeout:.1f} s; got {[f for _, f in self.frames][-6:]}"
                )
            self.receive(min(remaining, 0.1))

    def listen(self, seconds: float) -> list[dict]:
        """Everything that arrives during the next `seconds`."""
        deadline, got = time.monotonic() + seconds, []
        while (remaining := deadline - time.monotonic()) > 0:
            frame = self.receive(min(remaining, 0.1))
            if frame is not None:
                got.append(frame)
        return got

    def ping(self) -> dict:
        self.connection.send(json.dumps({"type": "ping", "payload": {}}))
        pong, _ = self.wait_for("pong", 10)
        return pong

    def closed(self, timeout: float) -> tuple[int, dict | None]:
        """Read until the server closes the socket: (close code, the last frame before the close)."""
        from websockets.exceptions import ConnectionClosed

        deadline, last = time.monotonic() + timeout, None
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                frame = self.receive(min(remaining, 0.1))
            except ConnectionClosed as closed:
                return closed.rcvd.code if closed.rcvd else closed.code, last
            last = frame or last
        raise AssertionError(f"still open after {timeout:.1f} s; got {[f for _, f in self.frames][-6:]}")

    def close(self) -> None:
        self.connection.close()


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (its children, their children, …), from /proc (Linux)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # gone meanwhile
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])  # fields after "(comm)": state, ppid, …
            parents.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def running(pid: int) -> bool:
    """Whether process `pid` exists and has not exited (a zombie has exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""
