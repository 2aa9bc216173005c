"""Redis connection pools that stay usable in a child forked while another thread held one.

The RQ worker forks a work-horse per job while its dispatcher thread (and RQ's pub/sub thread)
use Redis. redis-py rebuilds a pool in the child (`_checkpid` → `reset`), but `reset` first takes
the pool's lock; a fork made while another thread held it copies the lock held, and the child
waits forever — the job hung until RQ's timeout (seen in bench/callbacks.py: 2 of 10,000 seat
jobs, 180 s each). Here the child gets fresh locks before it runs anything else.
"""

from __future__ import annotations

import os
import threading
import weakref

from redis import ConnectionPool

_pools: weakref.WeakSet[ConnectionPool] = weakref.WeakSet()
_registered = False


def _fresh_locks_in_child() -> None:
    for pool in list(_pools):
        # Only this thread exists in the child: nobody can be holding these.
        pool._lock = threading.RLock()
        pool._fork_lock = threading.RLock()


def protect(pool: ConnectionPool) -> ConnectionPool:
    """Give `pool` fresh locks in every child forked from now on."""
    global _registered
    if not _registered:
        os.register_at_fork(after_in_child=_fresh_locks_in_child)
        _registered = True
    _pools.add(pool)
    return pool
