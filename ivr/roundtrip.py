"""One pipelined Redis round trip for the webhooks' hot path, on a connection kept per thread.

redis-py's `Pipeline.execute` borrows a connection from the pool and gives it back on every
call, and wraps the exchange in its observability and retry bookkeeping; measured through the
WSGI app (`bench/profile_webhooks.py`) that was the largest single cost of a webhook after form
parsing. `RoundTrip.execute` sends the same commands — built with redis-py's own `Pipeline`
methods, parsed with its own response callbacks — on a connection this thread keeps, so only
packing, one `sendall` and the replies remain. Non-transactional pipelines only: one with MULTI,
WATCH or a registered script (which needs SCRIPT EXISTS first) takes redis-py's normal path.
"""

from __future__ import annotations

import os
import threading

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import ConnectionError, ResponseError
from rq import get_current_job


class RoundTrip:
    def __init__(self, redis: Redis):
        self.redis = redis
        self._local = threading.local()

    def pipeline(self) -> Pipeline:
        """A command builder; hand it back to `execute`."""
        return self.redis.pipeline(transaction=False)

    def execute(self, pipe: Pipeline) -> list:
        """Run the pipeline's commands in one round trip and return their parsed replies.

        Raises the first command error after every reply has been read (as redis-py does, so
        the connection never falls out of step), and ConnectionError/TimeoutError after the
        connection's own retry policy gave up. A retried send may repeat commands that reached
        Redis before the connection broke — as with redis-py's pipeline — so callers send only
        commands that are safe to repeat (events carry ids; scripts are idempotent)."""
        stack = pipe.command_stack
        if not stack:
            return []
        if pipe.transaction or pipe.watching or pipe.scripts:
            return pipe.execute()
        # In an RQ work-horse (a fresh process per job) a kept connection would be a second
        # connect per job beside the pool's: borrow the pool's there, and give it back.
        pool = self.redis.connection_pool
        borrowed = get_current_job() is not None
        conn = pool.get_connection() if borrowed else self._connection()
        kept = not borrowed and getattr(conn, "_sock", None) is not None
        try:
            return conn.retry.call_with_retry(
                lambda: self._exchange(pipe, conn, stack), lambda _error: conn.disconnect()
            )
        except ConnectionError:
            if not kept:
                raise  # a fresh connection failed: Redis is down, no point asking twice
            # The kept connection may have been closed since its last use (a Redis restart, an
            # idle timeout): one fresh connection, once, as the pool's check at checkout does.
            conn.disconnect()
            return self._exchange(pipe, conn, stack)
        finally:
            pipe.command_stack = []
            if borrowed:
                pool.release(conn)

    @staticmethod
    def _exchange(pipe: Pipeline, conn, stack: list) -> list:  # noqa: ANN001 - a redis Connection
        conn.send_packed_command(conn.pack_commands([args for args, _ in stack]))
        replies: list = []
        for args, options in stack:
            try:
                # parse_response pops its private options; keep the stack intact for a retry.
                replies.append(pipe.parse_response(conn, args[0], **dict(options)))
            except ResponseError as error:
                replies.append(error)
        for number, reply in enumerate(replies, start=1):
            if isinstance(reply, ResponseError):
                pipe.annotate_exception(reply, number, stack[number - 1][0])
                raise reply
        return replies

    def _connection(self):  # noqa: ANN202 - a redis Connection
        """This thread's connection, made afresh in a forked child (gunicorn workers, RQ
        work-horses) so no two processes ever share a socket."""
        local = self._local
        pid = os.getpid()
        conn = getattr(local, "conn", None)
        if conn is None or local.pid != pid:
            # Taken out of the pool for good: the pool still counts it (max_connections holds)
            # and closes it on disconnect(), e.g. at shutdown.
            conn = self.redis.connection_pool.get_connection()
            local.conn, local.pid = conn, pid
        return conn
