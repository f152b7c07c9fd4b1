"""Which runs the replicate phase plans: every validation-front point and the ce baseline,
once per replicate seed, and nothing twice."""

from __future__ import annotations

import pandas as pd

from flipsearch.results import config_columns, decode_config
from flipsearch.search.replicates import plan, replicate_seeds
from flipsearch.search.space import load_space

SPACE = """
name: rep
scenario: {datasets: [digits], arrangements: [exclusive-op], models: [small]}
objectives: [accuracy_new:max, nfr:min]
search: {sampler: grid, replicates: 2}
methods:
  ce: {}
  bct: {lambda_c: {choice: [0.5, 1.0]}}
"""


def _searched(space, method, number, val_acc, val_nfr, **hparams):
    """A search row as a CPU worker writes it: the device resolved from the sweep's "auto"."""
    key, template = next(iter(space.templates.items()))
    cfg = template.replace(method=method, hparams={**template.hparams, **hparams}, device="cpu")
    return {**config_columns(cfg), "study": key, "trial_number": number, "trial_uid": f"uid{number}",
            "replicate_of": None, "replicate": None, "status": "ok",
            "val_accuracy_new": val_acc, "val_nfr": val_nfr}


def test_a_ce_front_point_shares_the_baselines_replicates(tiny_space):
    space = load_space(tiny_space(SPACE))
    key, template = next(iter(space.templates.items()))
    assert template.device == "auto"
    rows = pd.DataFrame([_searched(space, "ce", 0, 0.95, 0.030),              # on the front: best accuracy
                         _searched(space, "bct", 1, 0.93, 0.010, lambda_c=1.0),  # on the front: lowest NFR
                         _searched(space, "bct", 2, 0.90, 0.040, lambda_c=0.5)])  # dominated
    tasks = plan(space, rows)
    origins = sorted({t["replicate_of"] for t in tasks})
    # the ce trial is the baseline's configuration: its replicates are the baseline's, not a second set
    assert origins == [f"baseline:{key}", "uid1"]
    assert len(tasks) == 2 * len(replicate_seeds(space))
    runs = [(t["config"]["method"], tuple(sorted(t["config"]["hparams"].items())), t["config"]["seed"]) for t in tasks]
    assert len(set(runs)) == len(runs)                                       # no run planned twice
    assert {t["config"]["seed"] for t in tasks} == set(replicate_seeds(space)) == {1, 2}
    assert all(t["config"]["device"] == "auto" for t in tasks)                # the sweep's setting, not a row's
    bct = [t for t in tasks if t["replicate_of"] == "uid1"]
    assert all(decode_config(rows.iloc[1]).replace(device="auto", seed=t["config"]["seed"]).to_dict() == t["config"]
               for t in bct)


def test_rows_already_written_are_not_planned_again(tiny_space):
    space = load_space(tiny_space(SPACE))
    key, _ = next(iter(space.templates.items()))
    rows = pd.DataFrame([_searched(space, "ce", 0, 0.95, 0.030), _searched(space, "bct", 1, 0.93, 0.010, lambda_c=1.0)])
    first = plan(space, rows)
    done = {**_searched(space, "ce", -1, 0.94, 0.03), "trial_uid": "b0", "replicate_of": f"baseline:{key}", "replicate": 0}
    again = plan(space, pd.concat([rows, pd.DataFrame([done])], ignore_index=True))
    assert len(again) == len(first) - 1
    assert (f"baseline:{key}", 0) not in {(t["replicate_of"], t["replicate"]) for t in again}


def test_a_ce_front_point_at_another_search_seed_is_still_the_baseline(tiny_space):
    """With two search seeds a ce trial at its defaults may run at seed 1: it is the
    baseline's configuration all the same (equal up to the seed), so it gets no replicate set
    of its own beside the baseline's."""
    space = load_space(tiny_space(SPACE.replace("models: [small]}", "models: [small], seeds: [0, 1]}")))
    assert space.seeds == [0, 1]
    key, template = next(iter(space.templates.items()))
    ce = _searched(space, "ce", 0, 0.95, 0.030)
    ce.update(config_columns(decode_config(ce).replace(seed=1)))  # the ce trial ran at search seed 1
    rows = pd.DataFrame([ce, _searched(space, "bct", 1, 0.93, 0.010, lambda_c=1.0)])
    tasks = plan(space, rows)
    assert sorted({t["replicate_of"] for t in tasks}) == [f"baseline:{key}", "uid1"]
    baseline_seeds = sorted(t["config"]["seed"] for t in tasks if t["replicate_of"] == f"baseline:{key}")
    # its replicate seeds, and search seed 0, which no ce trial at the defaults ran
    assert baseline_seeds == sorted(replicate_seeds(space) + [0])
