"""waitUrl and routing latency with 10, 1,000 and 100,000 callers queued (issue 3, section 6).

For each queue size N it fills the English payment line in a throwaway Redis with N callers,
then measures, in one process against a real redis-server:

- waitUrl: signed `POST /voice/en/hold/payment` requests through the WSGI app (the webhook
  Twilio loops while a caller waits: position, estimate, announcement), for callers anywhere in
  the line, each request an announcing turn (read, estimate, render, write);
- routing: one dispatcher pass that checks for lines a reload dropped and matches a freshly
  available agent with the longest-waiting caller (`callbacks.routing.route` minus the RQ job
  it queues), then puts the agent back.

It prints p50 / p99 per N and checks the target: p50 at 100,000 no more than 1.3x the p50 at 10.

    .venv/bin/python bench/queue_latency.py            # N = 10, 1,000, 100,000
    .venv/bin/python bench/queue_latency.py --smoke    # N = 10 and 1,000, few requests (CI)
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from twilio.request_validator import RequestValidator  # noqa: E402

from callbacks.routing import CONFIG_SEEN_WINDOW_MS  # noqa: E402
from ivr import create_app  # noqa: E402
from ivr.localredis import start_local_redis  # noqa: E402
from ivr.queues.lines import agent_lines  # noqa: E402
from ivr.queues.state import caller_key, waiting_key  # noqa: E402
from ivr.tickets.migrate import upgrade  # noqa: E402

TOKEN = "bench-token"
BASE = "https://hotline.bench"
TARGET_RATIO = 1.3


def fill(redis, n: int, now_ms: int) -> list[str]:
    """N callers in the English payment line, arrived one second apart; returns their sids."""
    redis.flushdb()
    sids = [f"CA{k:032x}" for k in range(n)]
    for start in range(0, n, 5000):
        pipe = redis.pipeline(transaction=False)
        chunk = sids[start : start + 5000]
        pipe.zadd(waiting_key("payment", "en"), {s: now_ms - (n - start - i) * 1000 for i, s in enumerate(chunk)})
        for s in chunk:
            pipe.hset(
                caller_key(s), mapping={"queue": "payment", "lang": "en", "arrived_ms": now_ms, "node": "agent_payment"}
            )
        pipe.execute()
    return sids


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def measure_wait_url(app, sids: list[str], requests: int, rng: random.Random) -> list[float]:
    client = app.test_client()
    validator = RequestValidator(TOKEN)
    samples = []
    for _ in range(requests):
        sid = rng.choice(sids)
        form = {
            "CallSid": sid,
            "AccountSid": "AC" + "0" * 32,
            "From": "+819012345678",
            "To": "+815012345678",
            "CallStatus": "ringing",
            "ApiVersion": "2010-04-01",
            "Direction": "inbound",
            "QueuePosition": "1",
        }
        headers = {"X-Twilio-Signature": validator.compute_signature(BASE + "/voice/en/hold/payment", form)}
        # Every measured turn is an announcing one (the costlier path), whatever the queue size:
        # otherwise small queues would be measured on repeat (quiet) turns and large ones not.
        app.extensions["hotline"].redis.hdel(caller_key(sid), "announced")
        start = time.perf_counter()
        response = client.post("/voice/en/hold/payment", data=form, headers=headers, base_url=BASE)
        samples.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200, response.get_data(as_text=True)
    return samples


def measure_routing(app, rounds: int) -> list[float]:
    hotline = app.extensions["hotline"]
    plan = hotline.config.current()
    lines = agent_lines(plan.config)
    samples = []
    with app.app_context():
        for k in range(rounds):
            hotline.routing.set_agent_status("a103", "available", 1_000 + k)
            start = time.perf_counter()
            # What every pass does before matching: is any line dropped by a reload (one round trip).
            assert not hotline.routing.dropped_lines(plan.version, plan.lines, 2_000 + k, CONFIG_SEEN_WINDOW_MS)
            matches = hotline.routing.match(lines, 2_000 + k)
            samples.append((time.perf_counter() - start) * 1000)
            assert len(matches) == 1, matches
            hotline.routing.set_agent_status("a103", "busy", 3_000 + k)
            hotline.routing.back_to_line(matches[0].call_sid)  # keep the line at N callers
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args(argv)
    sizes = [10, 1000] if args.smoke else [10, 1000, 100_000]
    requests = 200 if args.smoke else args.requests
    server = start_local_redis()
    tmp = tempfile.TemporaryDirectory()
    try:
        os.environ.pop("PUBLIC_BASE_URL", None)
        db = f"sqlite:///{tmp.name}/bench.db"
        upgrade(db)
        app = create_app(
            {
                "TWILIO_AUTH_TOKEN": TOKEN,
                "REDIS_URL": server.url,
                "DATABASE_URL": db,
                "PUBLIC_BASE_URL": BASE,
                "HOTLINE_CONFIG": str(ROOT / "config" / "hotline.yaml"),
                "CONFIG_RELOAD_INTERVAL_S": 0,
            }
        )
        redis = app.extensions["hotline"].redis
        rng = random.Random(2026)
        now_ms = int(time.time() * 1000)
        results = {}
        print(f"queue latency, in one process against redis-server; {requests} waitUrl requests per size")
        print(f"{'callers queued':>15}{'waitUrl p50 ms':>16}{'p99 ms':>10}{'routing p50 ms':>16}{'p99 ms':>10}")
        for n in sizes:
            sids = fill(redis, n, now_ms)
            for agent in ("a101", "a102", "a201"):
                app.extensions["hotline"].routing.set_agent_status(agent, "offline", now_ms)
            measure_wait_url(app, sids, min(100, requests), rng)  # warm-up
            wait = measure_wait_url(app, sids, requests, rng)
            route = measure_routing(app, min(requests, 500))
            results[n] = (
                statistics.median(wait),
                percentile(wait, 0.99),
                statistics.median(route),
                percentile(route, 0.99),
            )
            print(f"{n:>15,}{results[n][0]:>16.3f}{results[n][1]:>10.3f}{results[n][2]:>16.3f}{results[n][3]:>10.3f}")
        small, large = results[sizes[0]], results[sizes[-1]]
        wait_ratio, route_ratio = large[0] / small[0], large[2] / small[2]
        ok = wait_ratio <= TARGET_RATIO and route_ratio <= TARGET_RATIO
        print(
            f"p50 at {sizes[-1]:,} / p50 at {sizes[0]:,}: waitUrl {wait_ratio:.2f}x, routing {route_ratio:.2f}x "
            f"(target <= {TARGET_RATIO}x): {'PASS' if ok else 'FAIL'}{' (smoke: informational)' if args.smoke else ''}"
        )
        app.extensions["hotline"].close()
        return 0 if ok or args.smoke else 2
    finally:
        server.stop()
        tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
