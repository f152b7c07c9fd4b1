"""`flipsearch gate`: may this update ship? Rules with stated confidence on two models.

    from flipsearch.gate import GateRules, gate, gate_trial

    rules = GateRules(max_nfr=0.01, min_accuracy_gain=0.0, per_class_max_br=0.05)
    verdict = gate("m1.pt", "m2.pt", "fashion-mnist", rules)          # two checkpoints
    verdict = gate_trial("runs/demo", "3f2a9c", rules)                 # a sweep's kept model
    verdict.passed, print(verdict.summary()), verdict.to_json()

`stats` holds the exact statistics (Clopper–Pearson bounds, exact McNemar, Holm), `rules`
what each rule reads from a flip audit, `kept` where a sweep keeps its models.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .rules import GateRules, GateVerdict, RuleResult, evaluate, rate_metric_names


def gate(old_path: str | os.PathLike, new_path: str | os.PathLike, dataset: str, rules: GateRules, *,
         model: str | None = None, split: str = "test", arrangement: str = "exclusive-op", seed: int = 0,
         old_fraction: float = 0.5, data_root: str | os.PathLike | None = None, download: bool = False,
         device: str = "auto") -> GateVerdict:
    """Gate the update from checkpoint `old_path` (M1) to `new_path` (M2) on `split` of
    `dataset` (loaded as `flipsearch compare` loads them). Rules are checked before anything
    is loaded; every bad input is a one-line `UsageError`."""
    from ..audit import flip_audit, load_pair
    from ..train import pick_device

    rules.check()
    pair = load_pair(old_path, new_path, dataset, model=model, split=split, arrangement=arrangement, seed=seed,
                     old_fraction=old_fraction, critical_classes=rules.critical_classes, data_root=data_root,
                     download=download)
    ds, dev = pair.dataset, pick_device(device)
    audit = flip_audit(pair.old.to(dev), pair.new.to(dev), pair.x, pair.y,
                       class_names=ds.class_names or [str(c) for c in range(ds.num_classes)],
                       critical_mask=pair.critical_mask)
    verdict = evaluate(audit, rules)
    verdict.meta.update({"title": f"{Path(old_path).name} → {Path(new_path).name} on {ds.name} {split}",
                         "old": str(old_path), "new": str(new_path), "dataset": ds.name, "split": split,
                         "model": pair.model})
    return verdict


def gate_trial(out: str, trial: str, rules: GateRules, *, device: str = "auto") -> GateVerdict:
    """Gate the kept model of trial `trial` (its `trial_uid` or a unique prefix) of the sweep
    in `out` against its M1, on the row's own test set (its dataset, scale and split)."""
    import numpy as np

    from ..audit import flip_audit
    from ..errors import UsageError
    from ..train import pick_device
    from .kept import load_kept

    rules.check()
    kept = load_kept(out, trial)
    s = kept.scenario
    bad = [c for c in rules.critical_classes if not 0 <= c < s.num_classes]
    if bad:
        raise UsageError(f"critical classes {bad} do not exist; classes are 0..{s.num_classes - 1}")
    y = s.y_test.cpu()
    mask = np.isin(y.numpy(), np.asarray(rules.critical_classes, dtype=np.int64)) if rules.critical_classes else None
    dev = pick_device(device)
    audit = flip_audit(kept.old.to(dev), kept.new.to(dev), s.x_test, y,
                       class_names=s.dataset.class_names or [str(c) for c in range(s.num_classes)],
                       critical_mask=mask, old_num_classes=s.num_old_classes)
    verdict = evaluate(audit, rules)
    uid = str(kept.row["trial_uid"])
    verdict.meta.update({"title": f"trial {uid[:12]} of {out} ({kept.config.method}, {kept.config.dataset} "
                                  f"{kept.config.arrangement}, seed {kept.config.seed}) on its test set",
                         "out": str(out), "trial_uid": uid, "dataset": kept.config.dataset, "split": "test",
                         "model": kept.config.model_name})
    return verdict


__all__ = ["GateRules", "GateVerdict", "RuleResult", "gate", "gate_trial", "evaluate", "rate_metric_names"]
