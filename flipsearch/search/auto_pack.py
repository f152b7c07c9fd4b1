"""`search.pack: auto` in a sweep: one measured pack size per scenario.

Before the first trial, each distinct (dataset, model, scale, update recipe) of the sweep is
measured once by `pack_size.throughput_curve`, in a Ray task holding exactly a trial's
resources (`cpus_per_trial` torch threads, `gpus_per_trial`) and on the device a trial gets
there (`trainable.assigned_device`), so the curve is the device a pack will run on, not the
driver's. The probes run one after another (two on one GPU would measure each other), and
a pack's memory budget is the trial's GPU share (`pack_size.memory_budget`). The chosen K is capped at the trials a concurrent slot
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
_POINT_FIELDS = ("k", "seconds", "rate", "peak_bytes")


def _measure(cfg_dict: dict, dataset: Any, gpus_per_trial: float) -> list[dict]:
    """One curve, in a Ray task with a trial's resources, on the device a trial there gets
    (`assigned_device`: the CPU for `gpus_per_trial 0`, even where GPUs are visible), its
    memory capped and budgeted to the trial's GPU share as a trial's is."""
    from .trainable import gpu_trial_device, release_gpu_memory, use_assigned_cpus

    use_assigned_cpus()
    cfg = TrialConfig.from_dict(cfg_dict).replace(device=gpu_trial_device())
    try:
        points = throughput_curve(cfg, dataset, gpu_share=gpus_per_trial or 1.0)
    finally:
        release_gpu_memory()
    return [{**p.to_dict(), "device": cfg.device} for p in points]


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

        curves: dict[str, list[dict]] = {}
        for key in todo:  # one probe at a time: probes sharing a GPU would measure each other
            cfg = space.templates[key]
            ck = _curve_key(cfg)
            if ck not in curves:
                curves[ck] = ray.get(task.remote(cfg.to_dict(), None if cfg.explicit
                                                 else datasets.get(dataset_key(cfg)), space.gpus_per_trial))
        for key in todo:
            points = curves[_curve_key(space.templates[key])]
            k = choose_pack_size([CurvePoint(**{f: p[f] for f in _POINT_FIELDS}) for p in points], cap=cap)
            record["sizes"][key], record["curves"][key] = k, points
            if not quiet:
                shape = ", ".join(f"K={p['k']}: {p['rate']:.0f}/s" for p in points) or "no pack fitted"
                where = points[0].get("device", "?") if points else "?"
                print(f"[flipsearch] pack auto: {key} -> {k} (on {where}, member-samples/s {shape}; at most {cap})",
                      file=sys.stderr, flush=True)
        out.write_bytes(json.dumps(record, indent=2).encode(), RECORD)
    return {k: int(record["sizes"][k]) for k in studies}
