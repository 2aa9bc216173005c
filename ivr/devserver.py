"""`python -m ivr run`: the hotline on this machine with embedded defaults.

Starts a local Redis when REDIS_URL is unset, migrates the SQLite ticket store, runs an RQ
worker and the web app under gunicorn, and prints the URLs to give Twilio.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from contextlib import contextmanager

from ivr.localredis import start_local_redis


@contextmanager
def local_environment():
    """REDIS_URL (starting a Redis if needed) and a development auth token when unset."""
    started = None
    if not os.environ.get("REDIS_URL"):
        started = start_local_redis()
        os.environ["REDIS_URL"] = started.url
        print(f"* started a local Redis at {started.url} (set REDIS_URL to use your own)")
    if not os.environ.get("TWILIO_AUTH_TOKEN"):
        os.environ["TWILIO_AUTH_TOKEN"] = "dev-" + secrets.token_hex(8)
        print(
            "* TWILIO_AUTH_TOKEN is unset: using a development token. Real Twilio requests will get "
            "403 until you export your account's auth token."
        )
    try:
        yield
    finally:
        if started:
            started.stop()


def _interrupt(*_args: object) -> None:
    raise KeyboardInterrupt


def main(port: int) -> int:
    from ivr import create_app
    from ivr.tickets.migrate import upgrade

    # Stop the same way on SIGTERM as on Ctrl-C: children first, then the private Redis.
    signal.signal(signal.SIGTERM, _interrupt)
    with local_environment():
        app = create_app()  # refuses an invalid config before anything starts
        upgrade(app.config["DATABASE_URL"])
        with app.app_context():
            from callbacks.tickets import seed_reference_floor

            seed_reference_floor()
        base = os.environ.get("PUBLIC_BASE_URL") or f"http://localhost:{port}"
        env = dict(os.environ)
        children = [
            subprocess.Popen([sys.executable, "-m", "flask", "--app", "wsgi", "hotline", "worker"], env=env),
            subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--bind", f"0.0.0.0:{port}", "wsgi:app"],
                env=env,
            ),
        ]
        print(
            f"\nHotline is running. Ticket database: {app.config['DATABASE_URL']}\n"
            f"Give Twilio these URLs (Phone Numbers > your number > Voice configuration):\n"
            f"  A call comes in:        POST {base}/voice/incoming\n"
            f"  Primary handler fails:  POST {base}/voice/fallback\n"
            f"  Call status changes:    POST {base}/voice/status\n"
            f"Twilio must reach this machine over https: run a tunnel (e.g. ngrok http {port}) and set\n"
            f"PUBLIC_BASE_URL to its https origin, or signatures will not match.\n"
            f"Try a call without a phone:  make call KEYS=3,2,1\n"
            f"Health: {base}/healthz    Press Ctrl-C to stop.\n",
            flush=True,
        )
        try:
            while all(child.poll() is None for child in children):
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            for child in children:
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)
            for child in children:
                try:
                    child.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    child.kill()
    return 0
