"""The worker's dispatcher thread: queues ticket syncs for calls marked due, and routes waiting
callers to available agents. It wakes when a webhook pushes to the wake list (a caller joined,
an agent became available) and at least every second. Several workers may run one; a short
lock lets one at a time do a pass."""

from __future__ import annotations

import logging
import threading
import uuid

from flask import Flask
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from callbacks.routing import route
from callbacks.tickets import dispatch_due, dispatch_unfinished
from ivr.queues.live import fold_stats
from ivr.queues.state import WAKE_KEY
from ivr.services import services

log = logging.getLogger(__name__)

LOCK_KEY = "hotline:dispatch-lock"
# Release the lock only if it is still ours: a pass slower than the lock's life must not free the
# lock another worker has taken since.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def dispatch_once() -> tuple[int, int]:
    """One pass: (ticket syncs queued, callers routed)."""
    hotline = services()
    synced = 0
    while (batch := dispatch_due(hotline.redis, hotline.tickets_queue)) == 500:
        synced += batch
    dispatch_unfinished(hotline.redis, hotline.tickets_queue)
    fold_stats(hotline.routing, hotline.config.current().config, hotline.clock().timestamp())
    return synced + batch, route(hotline.routing_queue)


def run_dispatcher(app: Flask, stop: threading.Event, interval_s: float = 1.0) -> None:
    with app.app_context():
        redis = services().redis
        unreachable = False
        while not stop.is_set():
            try:
                redis.blpop([WAKE_KEY], timeout=interval_s)
                token = uuid.uuid4().hex
                if redis.set(LOCK_KEY, token, nx=True, px=int(interval_s * 5000)):
                    try:
                        dispatch_once()
                    finally:
                        redis.eval(_RELEASE, 1, LOCK_KEY, token)
                if unreachable:
                    log.warning("dispatcher: Redis answers again")
                    unreachable = False
            except (RedisConnectionError, RedisTimeoutError) as exc:  # down, or hung (SIGSTOP, a full disk)
                # Once per outage, not a traceback a second: the outage is the news, and the
                # worker's own log says the same.
                if not unreachable:
                    log.warning("dispatcher: Redis unreachable (%s); retrying every %.0f s", exc, interval_s)
                unreachable = True
                stop.wait(interval_s)
            except Exception:  # noqa: BLE001 - keep dispatching after a config or code blip
                log.exception("dispatcher pass failed; retrying")
                stop.wait(interval_s)
