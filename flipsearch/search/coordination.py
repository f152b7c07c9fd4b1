"""Cross-node coordination for reference models on object-store outputs.

File locks need a shared POSIX filesystem; an `s3://` or `gs://` output has none. There a
named Ray actor hands out *leases* per key: the holder renews its lease while it trains, and a
lease whose holder died (a killed worker) expires, so nobody waits forever.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid

import ray

LEASE_SECONDS = 30.0


@ray.remote(num_cpus=0)
class LeaseLocks:
    """A Ray actor holding named leases (object-store outputs have no flock): a lease not renewed within
    LEASE_SECONDS is free again."""

    def __init__(self):
        self._held: dict[str, tuple[str, float]] = {}

    def acquire(self, key: str, owner: str) -> bool:
        now = time.time()
        holder = self._held.get(key)
        if holder is None or holder[0] == owner or holder[1] < now:
            self._held[key] = (owner, now + LEASE_SECONDS)
            return True
        return False

    def renew(self, key: str, owner: str) -> None:
        if self._held.get(key, ("",))[0] == owner:
            self._held[key] = (owner, time.time() + LEASE_SECONDS)

    def release(self, key: str, owner: str) -> None:
        if self._held.get(key, ("",))[0] == owner:
            del self._held[key]


@contextlib.contextmanager
def lease_lock(actor, key: str, poll: float = 0.5):
    """Hold the lease `key` on the `LeaseLocks` actor while the block runs, renewing it in the background."""
    owner = uuid.uuid4().hex
    while not ray.get(actor.acquire.remote(key, owner)):
        time.sleep(poll)
    stop = threading.Event()

    def keep_alive():
        while not stop.wait(LEASE_SECONDS / 3):
            actor.renew.remote(key, owner)

    thread = threading.Thread(target=keep_alive, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        ray.get(actor.release.remote(key, owner))
