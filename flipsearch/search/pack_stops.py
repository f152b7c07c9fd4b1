"""MO-ASHA over packs: the scheduler stops single members of a pack.

Ray Tune's scheduler decides per Ray trial, and a pack is one Ray trial of K members. So a
pack reports, after each epoch, every live member's validation values under `MEMBERS`
(JSON of `{trial_uid: {"val_nfr": …}}`); `MOASHAScheduler` ranks each member at its rung like a solo
trial and answers CONTINUE for the Ray trial, writing the members it stops to a `PackStops`
actor (named per run). The worker reads them back before its next epoch and takes those
members out of the pack (`fit_pack` shrinks; each lands as a `stopped` row). Ray Tune's
function API blocks `tune.report` until the driver has handled the result, so the decision
is already there when the worker asks; the worker still waits up to `WAIT_S` for it, and
past that trains on with every member (nothing is lost, only budget spent).
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable

# A JSON string, not a nested dict: Ray Tune flattens nested result dicts ("members/uid/key")
# before a scheduler sees them.
MEMBERS = "members_json"
WAIT_S = 60.0


class PackStops:
    """Decisions per (Ray trial id, epoch): the member uids stopped there."""

    def __init__(self):
        self._stops: dict[tuple[str, float], list[str]] = {}

    def put(self, trial_id: str, epoch: float, uids: list[str]) -> None:
        self._stops[(trial_id, float(epoch))] = list(uids)

    def get(self, trial_id: str, epoch: float) -> list[str] | None:
        return self._stops.pop((trial_id, float(epoch)), None)


def actor_name(run_id: str) -> str:
    """The name of a run's `PackStops` actor."""
    return f"flipsearch-pack-stops-{run_id}"


def start_board(run_id: str):
    """The run's `PackStops` actor (on the driver's node, gone with the run) and the
    callback the scheduler calls with its decisions."""
    import ray

    board = ray.remote(num_cpus=0)(PackStops).options(name=actor_name(run_id)).remote()

    def publish(trial_id: str, epoch: float, uids: list[str]) -> None:
        ray.get(board.put.remote(trial_id, epoch, uids))

    return board, publish


def member_stopper(run_id: str, trial_id: str, uids: list[str], report: Callable[[dict], Any],
                   wait_s: float = WAIT_S) -> Callable[[int, dict[int, dict[str, float]]], set]:
    """`run_pack`'s `stop_members` on a worker: report the live members' validation values,
    then return the indices the scheduler stopped."""
    import ray

    from ..trial import VAL_PREFIX

    board = ray.get_actor(actor_name(run_id))

    def stop_members(epoch: int, val: dict[int, dict[str, float]]) -> set:
        members = {uids[k]: {VAL_PREFIX + n: v for n, v in metrics.items()} for k, metrics in val.items()}
        report({"epoch": epoch, MEMBERS: json.dumps(members)})
        deadline = time.monotonic() + wait_s
        while (stopped := ray.get(board.get.remote(trial_id, epoch))) is None:
            if time.monotonic() > deadline:
                return set()
            time.sleep(0.02)
        return {k for k in val if uids[k] in set(stopped)}

    return stop_members
