"""`search.pack: auto` in a sweep: one measured pack size per scenario.

Before the first trial, each distinct (dataset, model, scale, update recipe) of the sweep is
measured once by `pack_size.throughput_curve`, in a Ray task holding exactly a trial's
resources (`cpus_per_trial` torch threads, `gpus_per_trial`), so the curve is the device a
pack will run on, not the driver's. The chosen K is capped at the trials a concurrent slot
gets (`ceil(trials_per_scenario / concurrency)`: a bigger pack would leave slots idle). The
sizes and curves land in `OUT/pack_auto.json`; `--resume` reuses them, so a resumed sweep
packs as it began.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

from ..config import TrialConfig
from ..pack_size import CurvePoint, choose_pack_size, throughput_curve
from ..rundir import RunDir
from ..storage import Storage

RECORD = RunDir.PACK_AUTO


def _measure(cfg_dict: dict, dataset: Any) -> list[dict]:
    from .trainable import use_assigned_cpus

    use_assigned_cpus()
    return [p.to_dict() for p in throughput_curve(TrialConfig.from_dict(cfg_dict), dataset)]


def _curve_key(cfg: TrialConfig) -> str:
    return json.dumps([cfg.dataset, cfg.model_name, cfg.scale, cfg.explicit, cfg.update_recipe.as_dict()],
                      sort_keys=True, default=str)


def auto_pack_sizes(space, out: Storage, studies: list[str], datasets: dict, quiet: bool = False) -> dict[str, int]:
    """Pack size per study (measured now, or read back from a previous run of this sweep)."""
    import ray

    from ..methods import LossMethod, get_method

    if not any(isinstance(get_method(m), LossMethod) for m in space.methods):
        return {k: 1 for k in studies}  # nothing in this sweep packs
    record = json.loads(out.read_bytes(RECORD)) if out.exists(RECORD) else {"sizes": {}, "curves": {}}
    cap = max(1, math.ceil(space.trials_per_scenario / space.concurrency))
    todo = [k for k in studies if k not in record["sizes"]]
    if todo:
        task = ray.remote(_measure).options(num_cpus=space.cpus_per_trial, num_gpus=space.gpus_per_trial,
                                            max_retries=0)
        from .trainable import dataset_key

        by_curve: dict[str, Any] = {}
        for key in todo:
            cfg = space.templates[key]
            ck = _curve_key(cfg)
            if ck not in by_curve:
                by_curve[ck] = task.remote(cfg.to_dict(), None if cfg.explicit else datasets.get(dataset_key(cfg)))
        curves = dict(zip(by_curve, ray.get(list(by_curve.values()))))
        for key in todo:
            points = curves[_curve_key(space.templates[key])]
            k = choose_pack_size([CurvePoint(**p) for p in points], cap=cap)
            record["sizes"][key], record["curves"][key] = k, points
            if not quiet:
                shape = ", ".join(f"K={p['k']}: {p['rate']:.0f}/s" for p in points)
                print(f"[flipsearch] pack auto: {key} -> {k} (member-samples/s {shape}; at most {cap})",
                      file=sys.stderr, flush=True)
        out.write_bytes(json.dumps(record, indent=2).encode(), RECORD)
    return {k: int(record["sizes"][k]) for k in studies}
