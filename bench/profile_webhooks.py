"""Where a hotline webhook's CPU goes: the benchmark's traffic through the WSGI app in-process.

No gunicorn, no sockets, one thread: each pre-signed request of bench/webhooks.py becomes a WSGI
environ and is handed to the app directly, first for timing (hotline vs the bare Flask app, in
microseconds of wall time per request; Redis is a real local redis-server), then under cProfile.

    .venv/bin/python bench/profile_webhooks.py                # 3000 requests, top 35 functions
    .venv/bin/python bench/profile_webhooks.py -n 10000 --top 60 --sort cumulative
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.webhooks import AUTH_TOKEN, HOTLINE_CONFIG, Hook, build_traffic  # noqa: E402

HOST, PORT = "127.0.0.1", 5000
BASE_URL = f"http://{HOST}:{PORT}"


def environ(h: Hook) -> dict:
    path, _, query = h.path.partition("?")
    body = h.body.encode("ascii")
    return {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": HOST,
        "SERVER_PORT": str(PORT),
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": f"{HOST}:{PORT}",
        "CONTENT_TYPE": "application/x-www-form-urlencoded",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_X_TWILIO_SIGNATURE": h.signature,
        "HTTP_USER_AGENT": "TwilioProxy/1.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": body,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }


def drive(app, environs: list[dict], n: int) -> list[str]:
    statuses: list[str] = []

    def start_response(status, headers, exc_info=None):  # noqa: ANN001, ARG001
        statuses.append(status)

    for i in range(n):
        env = dict(environs[i % len(environs)])
        env["wsgi.input"] = io.BytesIO(env["wsgi.input"])
        result = app(env, start_response)
        b"".join(result)
        if hasattr(result, "close"):
            result.close()
    return statuses


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", type=int, default=3000, help="requests per measurement (default 3000)")
    p.add_argument("--top", type=int, default=35, help="functions to list (default 35)")
    p.add_argument("--sort", default="tottime", help="pstats sort key (default tottime)")
    args = p.parse_args()

    import logging

    from ivr import create_app
    from ivr.localredis import start_local_redis
    from ivr.tickets.migrate import upgrade

    redis_server = start_local_redis()
    tmp = Path(tempfile.mkdtemp(prefix="hotline-profile-"))
    try:
        url = f"sqlite:///{tmp / 'hotline.db'}"
        upgrade(url)
        os.environ.update(
            REDIS_URL=redis_server.url,
            TWILIO_AUTH_TOKEN=AUTH_TOKEN,
            PUBLIC_BASE_URL=BASE_URL,
            DATABASE_URL=url,
            HOTLINE_CONFIG=str(HOTLINE_CONFIG),
        )
        # Log as gunicorn would (the app's INFO lines to stderr), but to a file, not this terminal.
        logging.basicConfig(level=logging.INFO, stream=open(tmp / "app.log", "w"))  # noqa: SIM115
        hotline = create_app()
        from bench.bare_app import app as bare

        hooks = build_traffic(400, BASE_URL)
        environs = [environ(h) for h in hooks]
        for name, app in (("hotline", hotline), ("bare", bare)):
            statuses = drive(app, environs, len(environs))  # warm-up and check
            bad = [s for s in statuses if not s.startswith(("200", "204"))]
            if bad:
                print(f"{name}: {len(bad)} requests failed, e.g. {bad[0]}", file=sys.stderr)
                return 1
        timings = {}
        for name, app in (("hotline", hotline), ("bare", bare)):
            t0, c0 = time.perf_counter(), time.process_time()
            drive(app, environs, args.n)
            timings[name] = ((time.perf_counter() - t0) / args.n * 1e6, (time.process_time() - c0) / args.n * 1e6)
        for name, (wall, cpu) in timings.items():
            print(f"{name:<8} {wall:8.0f} us wall / request   {cpu:8.0f} us CPU (this process; Redis excluded)")
        print(f"hotline costs {timings['hotline'][1] / timings['bare'][1]:.1f}x the bare app's CPU per request\n")

        profiler = cProfile.Profile()
        profiler.enable()
        drive(hotline, environs, args.n)
        profiler.disable()
        stats = pstats.Stats(profiler).strip_dirs().sort_stats(args.sort)
        stats.print_stats(args.top)
    finally:
        redis_server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
