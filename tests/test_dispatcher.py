"""The worker's dispatcher thread through a Redis outage: it carries on, and says so once."""

from __future__ import annotations

import logging
import threading

from callbacks.dispatcher import run_dispatcher
from ivr.localredis import start_local_redis
from tests.test_cli import _until


def test_a_redis_outage_is_logged_once_and_its_end_too(make_app, caplog):
    """A Redis that goes away (a restart, `make run` stopping) is one warning, not a traceback a
    second: that was ~290 lines for ten seconds of a stopping `make run`."""
    server = start_local_redis()
    stop = threading.Event()
    try:
        app = make_app(REDIS_URL=server.url)
        thread = threading.Thread(target=run_dispatcher, args=(app, stop, 0.02), daemon=True)
        with caplog.at_level(logging.INFO, logger="callbacks.dispatcher"):
            thread.start()
            server.process.terminate()
            server.process.wait(timeout=10)

            def said(words: str) -> list[logging.LogRecord]:
                return [r for r in caplog.records if r.name == "callbacks.dispatcher" and words in r.getMessage()]

            _until(lambda: said("Redis unreachable"))
            server.start_again()  # polls until the new server answers: several passes fail meanwhile
            _until(lambda: said("Redis answers again"))
            assert len(said("Redis unreachable")) == 1 and len(said("answers again")) == 1
            assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
            assert thread.is_alive()
    finally:
        stop.set()
        server.stop()
