"""An RQ worker that loses no job when it dies holding one.

RQ moves a job atomically into a per-queue "intermediate" list (BLMOVE) only when a worker
listens on a single queue; with several it pops with BLPOP, and a job popped by a worker that is
killed before its work-horse registers it is gone: its hash says `queued`, no list holds it, and
no retry ever comes. (Killed with SIGKILL, the worker's scheduler process lives on and keeps its
Redis socket open, so Redis can hand it a job even after the kill.) Hotline's worker listens on
three queues (routing, callbacks, tickets) in priority order, so it takes jobs the single-queue
way for all three: a Lua script moves the first job of the first non-empty queue into that
queue's intermediate list, and while all are empty the worker waits on the routing queue (a
caller is waiting on those) for at most POLL_S before looking at all three again. A job stays in
its intermediate list until its work-horse has registered it as started; one left behind by a
dead worker is found by RQ's own maintenance (twice, a minute apart) and failed into its retry.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from redis import Redis
from rq import Queue, Worker
from rq.exceptions import DequeueTimeout, NoSuchJobError
from rq.job import Job
from rq.utils import as_text, get_version

# How long an idle worker waits on its first queue before looking at the others again: the
# most a callback dial or a ticket sync waits on an idle worker (a backlog never waits).
POLL_S = 0.25

# KEYS: source, intermediate, source, intermediate, ... in priority order. Taking a job also
# drops RQ's "first seen in the intermediate list" mark a recovered job (same id, retried) may
# still carry: another worker's maintenance must not take this fresh take for a stranded one.
_MOVE_FIRST = """
for i = 1, #KEYS, 2 do
  local job_id = redis.call('LMOVE', KEYS[i], KEYS[i + 1], 'LEFT', 'RIGHT')
  if job_id then
    redis.call('DEL', KEYS[i + 1] .. ':first_seen:' .. job_id)
    return {KEYS[i], job_id}
  end
end
return false
"""
MIN_REDIS = (6, 2, 0)  # LMOVE and BLMOVE

# KEYS: the job's execution registry. ARGV: the prefix of its executions' keys. A worker killed
# while running the job leaves its execution listed there for 60 s after the execution's own
# key expired, and RQ's success cleanup then fails on it ("Execution … not found in Redis"):
# the job did its work and is still counted failed and retried. Drop such dead entries first.
_DROP_DEAD_EXECUTIONS = """
local dropped = 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if redis.call('EXISTS', ARGV[1] .. id) == 0 then dropped = dropped + redis.call('ZREM', KEYS[1], id) end
end
return dropped
"""


class ReliableQueue(Queue):
    @classmethod
    def dequeue_any(
        cls,
        queues: Iterable[Queue],
        timeout: int | None,
        connection: Redis,
        job_class: type[Job] | None = None,
        serializer=None,  # noqa: ANN001 - RQ's signature
        death_penalty_class=None,  # noqa: ANN001
    ) -> tuple[Job, Queue] | None:
        queues = list(queues)
        job_cls = job_class or Job
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            moved = _move_first(connection, queues, deadline, timeout)
            if moved is None:
                return None
            queue_key, job_id = (as_text(v) for v in moved)
            queue = cls.from_queue_key(
                queue_key,
                connection=connection,
                job_class=job_cls,
                serializer=serializer,
                death_penalty_class=death_penalty_class,
            )
            try:
                return job_cls.fetch(job_id, connection=connection, serializer=serializer), queue
            except NoSuchJobError:  # deleted meanwhile (as RQ does: skip it)
                connection.lrem(queue.intermediate_queue_key, 1, job_id)


def _move_first(connection: Redis, queues: list[Queue], deadline: float | None, timeout: int | None):  # noqa: ANN202
    keys = [key for q in queues for key in (q.key, q.intermediate_queue_key)]
    while True:
        moved = connection.eval(_MOVE_FIRST, len(keys), *keys)
        if moved:
            return moved
        if deadline is None:
            return None
        left = deadline - time.monotonic()
        if left <= 0:
            raise DequeueTimeout(timeout, [q.key for q in queues])
        first = queues[0]
        job_id = connection.blmove(first.key, first.intermediate_queue_key, min(POLL_S, left))
        if job_id is not None:
            connection.delete(first.intermediate_queue.get_first_seen_key(as_text(job_id)))
            return first.key, job_id


class ReliableWorker(Worker):
    queue_class = ReliableQueue

    def work(self, *args, **kwargs) -> bool:  # noqa: ANN002, ANN003 - RQ's signature
        version = get_version(self.connection)
        if version < MIN_REDIS:
            raise RuntimeError(
                f"Redis {'.'.join(map(str, version))} is too old for the worker: it needs "
                f"{'.'.join(map(str, MIN_REDIS))} or newer (LMOVE)"
            )
        return super().work(*args, **kwargs)

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        drop_dead_executions(self.connection, job)
        # Every job came through an intermediate list (RQ assumes so only with one queue).
        super().prepare_job_execution(job, remove_from_intermediate_queue=True)


def drop_dead_executions(connection: Redis, job: Job) -> int:
    """Forget executions of `job` whose worker died (their keys expired); returns how many."""
    return int(connection.eval(_DROP_DEAD_EXECUTIONS, 1, job.execution_registry.key, f"rq:execution:{job.id}:"))
