"""RoundTrip: the webhooks' one pipelined Redis exchange gives what redis-py's pipeline gives,
keeps the connection in step after a command error, and survives a Redis restart."""

from __future__ import annotations

import pytest
import redis as redis_lib
from redis.exceptions import ConnectionError, ResponseError

from ivr.localredis import start_local_redis
from ivr.roundtrip import RoundTrip


def _fill(pipe) -> None:  # noqa: ANN001
    pipe.set("plain", "v", ex=60)
    pipe.get("plain")
    pipe.rpush("list", "a", "b")
    pipe.hset("hash", mapping={"f": "1", "g": "2"})
    pipe.hget("hash", "f")
    pipe.hget("hash", "missing")
    pipe.hgetall("hash")
    pipe.zadd("zset", {"m": 1.5})
    pipe.zscore("zset", "m")
    pipe.zrange("zset", 0, -1, withscores=True)
    pipe.exists("plain", "nothing")
    pipe.eval("return {KEYS[1], ARGV[1], 7}", 1, "k", "arg")


def test_replies_are_parsed_exactly_as_redis_pys_pipeline_parses_them(redis_url):
    redis = redis_lib.Redis.from_url(redis_url)
    expected_pipe = redis.pipeline(transaction=False)
    _fill(expected_pipe)
    expected = expected_pipe.execute()
    redis.flushdb()

    trip = RoundTrip(redis)
    pipe = trip.pipeline()
    _fill(pipe)
    assert trip.execute(pipe) == expected
    assert expected[2] == 2 and expected[5] is None and expected[8] == 1.5  # the parsing is real
    assert trip.execute(trip.pipeline()) == []


def test_a_command_error_is_raised_after_every_reply_is_read(redis_url):
    redis = redis_lib.Redis.from_url(redis_url)
    redis.set("text", "not a list")
    trip = RoundTrip(redis)
    pipe = trip.pipeline()
    pipe.set("before", 1)
    pipe.rpush("text", "x")  # WRONGTYPE
    pipe.set("after", 2)
    with pytest.raises(ResponseError, match="Command # 2"):
        trip.execute(pipe)
    # Everything else ran, and the kept connection is still in step for the next exchange.
    assert redis.get("before") == b"1" and redis.get("after") == b"2"
    pipe = trip.pipeline()
    pipe.get("after")
    pipe.incr("counter")
    assert trip.execute(pipe) == [b"2", 1]


def test_the_kept_connection_heals_after_a_redis_restart_and_fails_clearly_when_redis_is_gone():
    server = start_local_redis(appendonly=True)
    try:
        redis = redis_lib.Redis.from_url(server.url, socket_timeout=2, socket_connect_timeout=2)
        trip = RoundTrip(redis)
        pipe = trip.pipeline()
        pipe.rpush("events", "one")
        assert trip.execute(pipe) == [1]

        server.restart()
        pipe = trip.pipeline()
        pipe.rpush("events", "two")
        assert trip.execute(pipe) == [2]  # AOF kept "one"; the dead socket was replaced once

        server.stop()
        pipe = trip.pipeline()
        pipe.rpush("events", "three")
        with pytest.raises(ConnectionError):
            trip.execute(pipe)
    finally:
        server.stop()


def test_transactional_pipelines_take_redis_pys_own_path(redis_url):
    redis = redis_lib.Redis.from_url(redis_url)
    trip = RoundTrip(redis)
    pipe = redis.pipeline(transaction=True)
    pipe.incr("n")
    pipe.incr("n")
    assert trip.execute(pipe) == [1, 2]


def exchange_in_a_job(redis_url: str) -> tuple[int, int]:
    """Run by an RQ worker: one exchange, then how the pool's connections stand."""
    redis = redis_lib.Redis.from_url(redis_url)
    trip = RoundTrip(redis)
    pipe = trip.pipeline()
    pipe.incr("jobs")
    assert trip.execute(pipe) == [1]
    pool = redis.connection_pool
    return len(pool._in_use_connections), len(pool._available_connections)


def test_in_an_rq_job_the_exchange_borrows_the_pools_connection(redis_url):
    """A work-horse is a fresh process per job: a connection of its own beside the pool's would
    be a second connect for every job."""
    from rq import Queue, SimpleWorker

    redis = redis_lib.Redis.from_url(redis_url)
    queue = Queue("roundtrip-test", connection=redis)
    job = queue.enqueue(exchange_in_a_job, redis_url)
    SimpleWorker([queue], connection=redis).work(burst=True)
    assert job.return_value() == (0, 1)  # given back: the job's other commands reuse it
