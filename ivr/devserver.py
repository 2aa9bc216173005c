"""`python -m ivr run`: the hotline on this machine with embedded defaults.

Starts a local Redis when REDIS_URL is unset, migrates the SQLite ticket store, runs an RQ
worker and the web app under gunicorn, and prints the URLs to give Twilio.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager

from ivr.localredis import start_local_redis


@contextmanager
def local_environment(private_database: bool = False, announce_tokens: bool = True):
    """REDIS_URL (starting a Redis if needed) and development tokens when unset (printed, with
    `announce_tokens`, for whoever will sign requests or call the ops API). With
    `private_database` (the call simulator) a private Redis comes with a private SQLite file
    too: ticket references come from Redis, so two Redis servers writing one ticket database
    (the simulator beside `make run`) would hand out the same reference twice."""
    started = None
    scratch = None
    if not os.environ.get("REDIS_URL"):
        started = start_local_redis()
        os.environ["REDIS_URL"] = started.url
        print(f"* started a local Redis at {started.url} (set REDIS_URL to use your own)")
        if private_database and not os.environ.get("DATABASE_URL"):
            scratch = tempfile.TemporaryDirectory(prefix="hotline-call-")
            os.environ["DATABASE_URL"] = f"sqlite:///{os.path.join(scratch.name, 'tickets.db')}"
    told = []
    if not os.environ.get("TWILIO_AUTH_TOKEN"):
        os.environ["TWILIO_AUTH_TOKEN"] = "dev-" + secrets.token_hex(8)
        told.append(
            f"* TWILIO_AUTH_TOKEN is unset: using the development token {os.environ['TWILIO_AUTH_TOKEN']}\n"
            "  (sign test requests with it; real Twilio requests get 403 until you export your account's token)"
        )
    if not os.environ.get("OPS_API_TOKEN"):
        os.environ["OPS_API_TOKEN"] = "dev-ops-" + secrets.token_hex(8)
        told.append(f"* OPS_API_TOKEN is unset: the ops API takes the development token {os.environ['OPS_API_TOKEN']}")
    if announce_tokens and told:
        print("\n".join(told))
    try:
        yield
    finally:
        if started:
            started.stop()
        if scratch:
            scratch.cleanup()


def app_or_reasons(consequence: str):  # noqa: ANN201 - a Flask app or None
    """create_app(), or None after printing why it refused (the config checker's lines, or the
    missing settings) and `consequence`, without a traceback: for the local commands."""
    from ivr import create_app
    from ivr.menus.loader import ConfigError
    from ivr.settings import SettingsError

    try:
        return create_app()
    except ConfigError as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        print(f"the config has {exc.summary()}; {consequence}", file=sys.stderr)
    except SettingsError as exc:
        print(f"{exc}; {consequence}", file=sys.stderr)
    return None


def _signal_group(child: subprocess.Popen, sig: int) -> None:
    """Signal the child's whole process group (it leads one): what it forked stops with it."""
    try:
        os.killpg(child.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _interrupt(*_args: object) -> None:
    raise KeyboardInterrupt


def _port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return True
    return False


def _wait_healthy(url: str, web: subprocess.Popen, timeout_s: float = 30.0) -> bool:
    """Until the web app answers /healthz (or its process exits, or time runs out)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and web.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our own loopback URL
                if response.status == 200:
                    return True
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.3)
    return False


# A child that exits by itself is started again, unless this many exits come within the window.
MAX_RESTARTS = 5
RESTART_WINDOW_S = 60


def main(port: int) -> int:
    from ivr.tickets.migrate import upgrade

    # Stop the same way on SIGTERM as on Ctrl-C: children first, then the private Redis.
    signal.signal(signal.SIGTERM, _interrupt)
    # Closing the terminal (SIGHUP) too: gunicorn alone would take it as "reload" and live on.
    signal.signal(signal.SIGHUP, _interrupt)
    if _port_taken(port):
        print(f"port {port} is in use: stop what runs there, or choose another (PORT=5001 make run)", file=sys.stderr)
        return 1
    started_here = not os.environ.get("REDIS_URL")
    with local_environment():
        app = app_or_reasons("the hotline did not start")  # before anything starts
        if app is None:
            return 2
        upgrade(app.config["DATABASE_URL"])
        with app.app_context():
            from callbacks.tickets import seed_reference_floor

            seed_reference_floor()
        # The simulator must try the config this hotline runs, not the shipped one.
        live_config = os.environ.get("HOTLINE_CONFIG")
        config_env = f" HOTLINE_CONFIG={live_config}" if live_config else ""
        public = os.environ.get("PUBLIC_BASE_URL")
        base = public or f"http://localhost:{port}"
        host = os.environ.get("HOST", "127.0.0.1")  # loopback: a tunnel (ngrok) reaches it there
        env = dict(os.environ)
        # Each child leads its own process group, so stopping it stops what it forked too (RQ's
        # scheduler process, gunicorn's workers), even after the child itself was killed.
        commands = {
            "worker": [sys.executable, "-m", "flask", "--app", "wsgi", "hotline", "worker"],
            "web app (gunicorn)": [
                sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--bind", f"{host}:{port}", "wsgi:app"
            ],
        }  # fmt: skip

        def start(name: str) -> subprocess.Popen:
            return subprocess.Popen(commands[name], env=env, start_new_session=True)

        children = {name: start(name) for name in commands}
        web = children["web app (gunicorn)"]
        restarts: list[float] = []
        code = 0
        try:
            if not _wait_healthy(f"http://127.0.0.1:{port}/healthz", web):
                print("the web app did not come up (its log is above); stopping", file=sys.stderr)
                return 1
            tunnel = (
                ""
                if public
                else f"Twilio must reach this machine over https: run a tunnel (e.g. ngrok http {port}) and set\n"
                "PUBLIC_BASE_URL to its https origin, or signatures will not match.\n"
            )
            private = (
                "Its Redis is private and goes when this stops (callbacks and queues with it); set REDIS_URL\n"
                "to a Redis of your own to keep them.\n"
                if started_here
                else ""
            )
            print(
                f"\nHotline is running. Ticket database: {app.config['DATABASE_URL']}\n"
                f"Give Twilio these URLs (Phone Numbers > your number > Voice configuration):\n"
                f"  A call comes in:        POST {base}/voice/incoming\n"
                f"  Primary handler fails:  POST {base}/voice/fallback\n"
                f"  Call status changes:    POST {base}/voice/status\n"
                f"{tunnel}{private}"
                f"Try a call without a phone (a private Redis and database):{config_env}  make call KEYS=3,2,1\n"
                f"... or into this running hotline, its tickets in its API:\n"
                f"  REDIS_URL={os.environ['REDIS_URL']} DATABASE_URL={app.config['DATABASE_URL']}{config_env} \\\n"
                f"    make call KEYS=3,2,1\n"
                f"Health: {base}/healthz    Press Ctrl-C to stop.\n",
                flush=True,
            )
            while True:
                time.sleep(0.5)
                gone = [name for name, child in children.items() if child.poll() is not None]
                if not gone:
                    continue
                # One of them stopped by itself (a crash, a kill -9): start it again, so the
                # private Redis — and the callbacks and queues in it — outlive it. Crashing
                # over and over is a real problem: then stop and say so.
                now = time.monotonic()
                restarts = [t for t in restarts if now - t < RESTART_WINDOW_S] + [now] * len(gone)
                for name in gone:
                    child = children[name]
                    print(f"the {name} exited (code {child.returncode}; its log is above)", file=sys.stderr)
                if len(restarts) > MAX_RESTARTS:
                    print(f"{len(restarts)} exits within {RESTART_WINDOW_S} s: stopping", file=sys.stderr)
                    code = 1
                    break
                for name in gone:
                    _signal_group(children[name], signal.SIGKILL)  # what it forked (the scheduler)
                    children[name] = start(name)
                    print(f"the {name} was started again", file=sys.stderr, flush=True)
        except KeyboardInterrupt:
            pass
        finally:
            # Once stopping, a second stop signal must not cut this short: `make` passes its own
            # SIGTERM on to us, so `kill -- -<make's group>` sends two, and the second, raised
            # in the waits below, would stop the private Redis under a worker still stopping.
            for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
                signal.signal(sig, signal.SIG_IGN)
            for child in children.values():
                _signal_group(child, signal.SIGTERM)
            for child in children.values():
                try:
                    child.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    _signal_group(child, signal.SIGKILL)
                    child.wait()
    return code
