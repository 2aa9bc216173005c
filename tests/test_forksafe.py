"""A work-horse forked while another thread holds the Redis pool's lock still reaches Redis."""

from __future__ import annotations

import os
import signal
import threading
import time

import redis as redis_lib

from ivr.forksafe import protect


def _exit_code_within(pid: int, seconds: float) -> int:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)  # deadlocked: the bug this guards against
    os.waitpid(pid, 0)
    return -signal.SIGKILL


def test_a_child_forked_while_a_thread_holds_the_pool_lock_still_gets_a_connection(redis_url):
    client = redis_lib.Redis.from_url(redis_url)
    protect(client.connection_pool)
    client.ping()
    held, release = threading.Event(), threading.Event()

    def dispatcher_thread() -> None:  # as the worker's dispatcher, mid get_connection
        with client.connection_pool._lock:
            held.set()
            release.wait(10)

    thread = threading.Thread(target=dispatcher_thread)
    thread.start()
    held.wait(5)
    pid = os.fork()
    if pid == 0:  # the work-horse
        try:
            os._exit(0 if client.ping() else 1)
        except BaseException:  # noqa: BLE001 - any failure is the child's exit code
            os._exit(2)
    try:
        assert _exit_code_within(pid, 10) == 0
    finally:
        release.set()
        thread.join()
