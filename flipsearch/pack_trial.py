"""A pack of trials: K configurations of one scenario and one loss method, trained at once.

`run_pack(configs)` is `run_trial` for K configs that differ only in their method's
hyperparameters and per-member update-recipe settings (`pack_key`: same scenario, seed,
model, method and M1 recipe): the data, M1,
the references and the teacher logits are prepared once, and `pack.fit_pack` trains the
K updates in one step each batch. Every member's `TrialResult` is what `run_trial` gives for
its config alone (same seed, same batches; weights equal within float rounding, which the
tests check). A member whose loss diverges leaves the pack as `diverged`; `stop_members`
(the early-stopping hook) may take members out after any epoch, as `stopped`.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

from .config import TrialConfig
from .data import Dataset
from .errors import UsageError
from .methods import LossMethod, get_method
from .pack import SHARED_FIELDS, fit_pack
from .references import ReferenceStore
from .trial import PreparedTrial, TrialResult

# stop_members(epoch, {member index: validation metrics}) -> member indices to stop now
StopMembers = Callable[[int, dict[int, dict[str, float]]], set]


def pack_key(cfg: TrialConfig) -> tuple:
    """Configs with equal keys can share a pack: everything but the method's hyperparameters
    and the update recipe's per-member settings. `fit_pack` gives each member its own lr,
    momentum, weight decay, schedule and gradient clip in the packed optimiser, so a sweep
    that searches `update.lr` still packs; members share `pack.SHARED_FIELDS` (epochs, batch
    size, optimiser type, augmentation, AMP). A method with reference models besides M1 (MPT's
    φ_new) keys on the whole update recipe: its references are trained with that recipe."""
    d = cfg.to_dict()
    d.pop("hparams")
    if not get_method(cfg.method).needs:
        d["update_recipe"] = {f: d["update_recipe"][f] for f in SHARED_FIELDS}
    return tuple(sorted((k, repr(v)) for k, v in d.items()))


def packable(cfg: TrialConfig) -> bool:
    """Loss methods pack; NeuRecover (a repair of a shared reference) runs alone."""
    return isinstance(get_method(cfg.method), LossMethod)


def run_pack(configs: Sequence[TrialConfig], *, store: ReferenceStore | None = None,
             dataset: Dataset | None = None, stop_members: StopMembers | None = None) -> list[TrialResult]:
    """Run several trials of one scenario, seed, model, recipe and loss method as one pack (their models trained
    side by side); one `TrialResult` per config, in order.

    Args:
        configs: the members' configurations (`pack_key` equal, all `packable`).
        store: the reference-model cache (M1 and other references are trained once for the pack).
        dataset: the scenario's dataset, already loaded (else loaded here).
        stop_members: asked after each epoch which members the scheduler stopped.
    """
    configs = list(configs)
    keys = {pack_key(c) for c in configs}
    if len(keys) != 1 or not all(packable(c) for c in configs):
        raise UsageError("a pack needs configs of one scenario, seed, model, loss method and shared recipe "
                         "settings (pack_trial.pack_key)")
    t_start = time.perf_counter()
    cfg = configs[0]
    method = get_method(cfg.method)
    prep = PreparedTrial(cfg, store, dataset)
    m1 = prep.load_m1()
    ctx = prep.context(method)
    models = [method.initial_model(ctx, dict(c.hparams)) for c in configs]
    loss_fns = [method.make_loss(ctx, dict(c.hparams)) for c in configs]

    def on_epoch(epoch: int, losses: dict[int, float]) -> set[int]:
        if stop_members is None or epoch >= prep.update_recipe.epochs:
            return set()
        return set(stop_members(epoch, {k: prep.val_metrics(models[k]) for k in losses}))

    t = time.perf_counter()
    members = fit_pack(models, prep.scenario.x_update, prep.scenario.y_update, [c.update_recipe for c in configs],
                       seed=cfg.seed + 1, loss_fns=loss_fns, on_epoch=on_epoch)
    prep.timings["update"] = time.perf_counter() - t
    description = prep.describe()

    results = []
    for c, model, member in zip(configs, models, members):
        result = TrialResult(c, {}, epochs=member.epochs, timings=dict(prep.timings), references=dict(prep.refs.status),
                             reference_keys=dict(prep.refs.keys),
                             scenario=description, old_model=m1, info=method.facts(ctx, dict(c.hparams)),
                             numerics=prep.numerics())
        if member.status == "diverged":
            result.status, result.error = "diverged", member.error
        else:
            prep.evaluate(result, model, stopped=member.status == "stopped")
        result.timings["total"] = time.perf_counter() - t_start
        results.append(result)
    return results
