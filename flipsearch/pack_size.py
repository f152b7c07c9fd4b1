"""`pack: auto`: how many configurations one pack trains, from a throughput curve measured
on the trial's own device.

For one scenario (its data, model and update recipe) `throughput_curve` times a few
`fit_pack` steps of packs of K = 1, 2, 4, … freshly built members and records trained
member-samples per second and, on CUDA, the peak memory. The members train with plain
cross-entropy: a method's loss (a teacher's logits are computed once per pack) costs little
next to K forward and backward passes. Doubling stops when the rate gains less than `GAIN`
(the device is busy already), when the next pack would not fit the memory budget, when a
pack runs out of CUDA memory (the curve ends at the last pack that fitted), or when one
measurement passes `BUDGET_S`. The memory budget is `MEMORY_SHARE` of what the trial may
use: the device's free memory, but at most its share of the whole device
(`gpus_per_trial 0.25` puts four packs on one GPU). `choose_pack_size` takes the smallest K
within `TOLERANCE` of the best rate: a larger pack buys nothing and makes the search wait
for more suggestions per step.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch

from . import numerics
from .config import TrialConfig
from .data import Dataset
from .models import build_model
from .pack import fit_pack
from .train import cross_entropy, pick_device

SIZES = (1, 2, 4, 8, 16, 32, 64)
GAIN = 1.1          # keep doubling while the rate grows by at least this factor
TOLERANCE = 0.9     # the chosen K reaches this share of the best measured rate
MEMORY_SHARE = 0.8  # of the device's free memory a pack may plan to use
BUDGET_S = 30.0     # a measurement that takes longer ends the curve
STEPS = 4           # optimiser steps per measurement, at least
MIN_SECONDS = 0.5   # a solo measurement lasts about this long (more steps, up to one epoch)


@dataclass(frozen=True)
class CurvePoint:
    """One point of a pack's throughput curve: pack size k, the measured seconds, member-samples per second
    and (CUDA) peak memory."""
    k: int
    seconds: float          # one measurement: STEPS steps of the whole pack
    rate: float             # member-samples trained per second
    peak_bytes: int = 0     # CUDA only: peak memory allocated during the measurement

    def to_dict(self) -> dict:
        return asdict(self)


def memory_budget(device: torch.device, share: float = 1.0) -> float:
    """Bytes a pack on CUDA `device` may plan to use: MEMORY_SHARE of the memory this
    process can have, i.e. the free memory plus what its caching allocator holds, but at most
    `share` (the trial's `gpus_per_trial`, at most 1) of the device's total."""
    free, total = torch.cuda.mem_get_info(device)
    mine = torch.cuda.memory_reserved(device)  # cached blocks count as used in `free`
    return MEMORY_SHARE * min(free + mine, min(1.0, share) * total)


def grow(measure: Callable[[int], CurvePoint], sizes=SIZES, budget_s: float = BUDGET_S,
         budget_bytes: Callable[[], float] | None = None) -> list[CurvePoint]:
    """The curve: `measure(k)` for k in `sizes`, one at a time, until a stop rule (module
    doc) ends it. `budget_bytes()` (CUDA only) is the memory the next pack may plan on."""
    points: list[CurvePoint] = []
    for k in sizes:
        try:
            point = measure(k)
        except torch.cuda.OutOfMemoryError:
            break  # this pack does not fit: the curve ends at the last one that did
        points.append(point)
        best_before = max((p.rate for p in points[:-1]), default=0.0)
        if best_before and point.rate < GAIN * best_before:
            break  # the device is full: doubling again buys less than GAIN
        if point.seconds > budget_s:
            break
        if budget_bytes is not None and 2 * point.peak_bytes > budget_bytes():
            break  # the next pack (about twice the memory) would not fit
    return points


def throughput_curve(cfg: TrialConfig, dataset: Dataset | None = None, *, sizes=SIZES,
                     steps: int = STEPS, budget_s: float = BUDGET_S, gpu_share: float = 1.0) -> list[CurvePoint]:
    """Measured points of the curve for `cfg`'s scenario, model and update recipe, on
    `cfg.device` (the sweep passes the device its trials get). `gpu_share`: the trial's
    share of the GPU. Empty when not even one member fits in memory."""
    from .trial import load_scenario

    scenario = load_scenario(cfg, dataset)
    device = pick_device(cfg.device)
    numerics.apply(device)
    recipe = cfg.update_recipe.with_overrides(epochs=1)
    x, y = scenario.x_update.to(device), scenario.y_update.to(device)
    n = min(len(y), steps * recipe.batch_size)
    shape, classes = scenario.dataset.input_shape, scenario.num_classes
    cuda = device.type == "cuda"

    def measure(k: int) -> CurvePoint:
        models = [build_model(cfg.model_name, classes, shape, seed=i).to(device) for i in range(k)]
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        t = time.perf_counter()
        fit_pack(models, x[:n], y[:n], [recipe] * k, seed=0, loss_fns=[cross_entropy] * k)
        if cuda:
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t
        peak = torch.cuda.max_memory_allocated(device) if cuda else 0
        return CurvePoint(k, seconds, k * n / seconds, int(peak))  # n: read at call time

    try:
        # Warm-up (first-call costs: allocator, kernels, autotuning), then enough steps that a
        # solo measurement lasts about MIN_SECONDS, so timer noise and per-call set-up stay small.
        measure(1)
        n = min(len(y), max(n, int(n * MIN_SECONDS / measure(1).seconds)))
    except torch.cuda.OutOfMemoryError:
        points = []  # not even one member fits: the sweep runs unpacked (and its trials say why)
    else:
        points = grow(measure, sizes, budget_s, (lambda: memory_budget(device, gpu_share)) if cuda else None)
    if cuda:
        torch.cuda.empty_cache()  # a probe's (or an out-of-memory pack's) blocks back to the device
    return points


def choose_pack_size(points: list[CurvePoint], cap: int | None = None) -> int:
    """The smallest measured K within TOLERANCE of the best rate (at most `cap`); 1 for an
    empty curve."""
    if not points:
        return 1
    usable = [p for p in points if cap is None or p.k <= cap] or points[:1]
    best = max(p.rate for p in usable)
    return min(p.k for p in usable if p.rate >= TOLERANCE * best)
