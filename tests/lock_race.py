"""A sweep-lock contender for tests/test_reliability.py: a real process that takes part in
rounds of `OutputLock` races, released together by a `multiprocessing.Barrier`.

Each round: wait at the barrier (every contender and the test start at the same instant),
try to take the lock, report (round, pid, got it), wait while the test inspects the lock
file, release it if this contender holds it, wait while the test checks it is gone.
"""

from __future__ import annotations

import os


def contend(out: str, rounds: int, barrier, results) -> None:
    from flipsearch.errors import FlipsearchError
    from flipsearch.search.sweep import OutputLock
    from flipsearch.storage import Storage

    storage = Storage.open(out)
    for r in range(rounds):
        lock = OutputLock(storage, resume=True)
        barrier.wait()  # go
        try:
            lock.__enter__()
            got = True
        except FlipsearchError:
            got = False
        results.put((r, os.getpid(), got))
        barrier.wait()  # everyone tried; the test reads the lock file
        barrier.wait()  # the test is done reading
        if got:
            lock.__exit__(None, None, None)
        barrier.wait()  # released; the test checks the lock file is gone
