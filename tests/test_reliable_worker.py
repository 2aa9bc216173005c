"""The worker takes jobs so that one killed holding a job loses nothing (callbacks/reliable.py):
every job goes through its queue's intermediate list, in the worker's priority order, and one
left there by a dead worker is retried by the next worker's maintenance."""

from __future__ import annotations

import time

from rq import Retry
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, ScheduledJobRegistry

from ivr.cli import build_worker

JOB = "ivr.privacy.mask_number"  # a pure function of ours: the job's work does not matter here


def _worker(app):
    return build_worker(app.config["REDIS_URL"])


def test_jobs_are_taken_in_priority_order_into_their_queues_intermediate_lists(make_app):
    worker = _worker(make_app())
    routing, callbacks, tickets = worker.queues
    late = tickets.enqueue(JOB, "+819012345678")
    urgent = routing.enqueue(JOB, "+819012345679")
    dial = callbacks.enqueue(JOB, "+819012345670")

    taken = [worker.queue_class.dequeue_any(worker.queues, None, worker.connection) for _ in range(3)]
    assert [(job.id, queue.name) for job, queue in taken] == [
        (urgent.id, "routing"),
        (dial.id, "callbacks"),
        (late.id, "tickets"),
    ]
    for job, queue in taken:  # held, not gone: until a work-horse registers it as started
        assert worker.connection.lrange(queue.intermediate_queue_key, 0, -1) == [job.id.encode()]
        assert queue.count == 0
    assert worker.queue_class.dequeue_any(worker.queues, None, worker.connection) is None


def test_a_job_whose_worker_died_holding_it_is_run_by_the_next_worker(make_app):
    app = make_app()
    dead = _worker(app)
    tickets = dead.queues[2]
    job = tickets.enqueue(JOB, "+819012345678", retry=Retry(max=3))
    taken, _ = dead.queue_class.dequeue_any(dead.queues, None, dead.connection)
    assert taken.id == job.id  # ... and the worker is killed before its work-horse starts it

    survivor = _worker(app)
    survivor.work(burst=True)  # its maintenance sees the job held by nobody: a first sight
    redis = survivor.connection
    assert Job.fetch(job.id, connection=redis).get_status() == JobStatus.QUEUED  # not run, not lost
    seen = tickets.intermediate_queue
    assert redis.exists(seen.get_first_seen_key(job.id))
    # RQ's rule: held by nobody on two looks a minute apart. A minute later, the next worker's
    # maintenance hands it to its retry, and that worker runs it.
    redis.set(seen.get_first_seen_key(job.id), time.time() - 61)
    _worker(app).work(burst=True)
    done = Job.fetch(job.id, connection=redis)
    assert done.get_status() == JobStatus.FINISHED and done.return_value() == "+81******5678"
    assert redis.llen(tickets.intermediate_queue_key) == 0


def test_a_finished_job_leaves_no_trace_in_the_intermediate_lists(make_app):
    worker = _worker(make_app())
    jobs = [q.enqueue(JOB, "+819012345678") for q in worker.queues]
    worker.work(burst=True)
    assert [Job.fetch(j.id, connection=worker.connection).get_status() for j in jobs] == [JobStatus.FINISHED] * 3
    assert [worker.connection.llen(q.intermediate_queue_key) for q in worker.queues] == [0, 0, 0]


def test_taking_a_job_clears_a_stale_stranded_mark_so_maintenance_cannot_fail_it_while_it_runs(make_app):
    """A recovered job keeps its id; the mark RQ's maintenance left on it a minute ago must not
    make another worker's maintenance take this fresh take for a stranded one."""
    worker = _worker(make_app())
    routing = worker.queues[0]
    job = routing.enqueue(JOB, "+819012345678")
    seen = routing.intermediate_queue
    redis = worker.connection
    redis.set(seen.get_first_seen_key(job.id), time.time() - 600)
    taken, _ = worker.queue_class.dequeue_any(worker.queues, None, redis)
    assert taken.id == job.id and not redis.exists(seen.get_first_seen_key(job.id))
    # Another worker's maintenance in the moment before the work-horse starts it: a first sight only.
    _worker(make_app()).clean_registries()
    assert Job.fetch(job.id, connection=redis).get_status() == JobStatus.QUEUED
    assert redis.lrange(routing.intermediate_queue_key, 0, -1) == [job.id.encode()]


def test_a_job_rerun_after_its_worker_was_killed_finishes_cleanly(make_app):
    """A worker killed while running a job leaves the execution listed in the job's execution
    registry for a minute after the execution itself expired; the rerun's success cleanup must
    not fail on it (and count a job that did its work as failed, and retry it)."""
    worker = _worker(make_app())
    tickets = worker.queues[2]
    # result_ttl=0 as our jobs have: success deletes the job, and with it its executions.
    job = tickets.enqueue(JOB, "+819012345678", retry=Retry(max=3), result_ttl=0)
    redis = worker.connection
    # What the killed worker left: listed (score: its heartbeat + 60 s ahead), its key gone.
    redis.zadd(job.execution_registry.key, {"deadbeef" * 4: time.time() + 50})
    worker.work(burst=True)
    assert not redis.exists(job.key)  # done and deleted: neither failed nor waiting for a retry
    assert not FailedJobRegistry(queue=tickets).get_job_ids()
    assert not ScheduledJobRegistry(queue=tickets).get_job_ids()
