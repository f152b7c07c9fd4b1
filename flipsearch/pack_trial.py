"""A pack of trials: K configurations of one scenario and one loss method, trained at once.

`run_pack(configs)` is `run_trial` for K configs that differ only in their method's
hyperparameters (same scenario, seed, model, method and training recipes): the data, M1,
the references and the teacher logits are prepared once, and `pack.fit_pack` trains the
K updates in one step each batch. Every member's `TrialResult` is what `run_trial` gives for
its config alone (same seed, same batches; weights equal within float rounding, which the
tests check). A member whose loss diverges leaves the pack as `diverged`; `stop_members`
(the early-stopping hook) may take members out after any epoch, as `stopped`.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import torch

from .config import TrialConfig
from .data import Dataset
from .errors import UsageError
from .methods import LossMethod, UpdateContext, get_method
from .metrics import compute_metrics
from .models import build_model, expand_outputs
from .pack import fit_pack
from .references import ReferenceBuilder, ReferenceInputs, ReferenceStore
from .train import pick_device, predict_logits
from .trial import VAL_PREFIX, TrialResult, _file_sha256, _fingerprint, critical_test_mask, preflight
from .arrangements import describe

# stop_members(epoch, {member index: validation metrics}) -> member indices to stop now
StopMembers = Callable[[int, dict[int, dict[str, float]]], set]


def pack_key(cfg: TrialConfig) -> tuple:
    """Configs with equal keys can share a pack: everything but the method's hyperparameters."""
    d = cfg.to_dict()
    d.pop("hparams")
    return tuple(sorted((k, repr(v)) for k, v in d.items()))


def packable(cfg: TrialConfig) -> bool:
    """Loss methods pack; NeuRecover (a repair of a shared reference) runs alone."""
    return isinstance(get_method(cfg.method), LossMethod)


def run_pack(configs: Sequence[TrialConfig], *, store: ReferenceStore | None = None,
             dataset: Dataset | None = None, stop_members: StopMembers | None = None) -> list[TrialResult]:
    configs = list(configs)
    keys = {pack_key(c) for c in configs}
    if len(keys) != 1 or not all(packable(c) for c in configs):
        raise UsageError("a pack needs configs of one scenario, seed, model, recipe and loss method")
    t_start = time.perf_counter()
    cfg = configs[0]
    method = get_method(cfg.method)
    m1_recipe, upd_recipe = cfg.recipes()
    device = pick_device(cfg.device)
    store = store or ReferenceStore()
    timings: dict[str, float] = {}

    t = time.perf_counter()
    scenario = preflight(cfg, dataset).to(device)
    timings["data"] = time.perf_counter() - t
    n_old, n_all = scenario.num_old_classes, scenario.num_classes
    spec = {"dataset": cfg.dataset if not cfg.explicit else list(cfg.explicit), "arrangement": scenario.arrangement,
            "old_fraction": cfg.old_fraction, "model": cfg.model_name, "seed": cfg.seed,
            "data_fingerprint": _fingerprint(scenario)}
    refs = ReferenceBuilder(store, spec, cfg.model_name, scenario.dataset.input_shape, n_old, n_all,
                            m1_recipe, upd_recipe, cfg.seed, device, cfg.old_model,
                            _file_sha256(cfg.old_model) if cfg.old_model else None)
    t = time.perf_counter()
    m1 = refs.m1(scenario.x_train, scenario.y_train)
    timings["m1"] = time.perf_counter() - t
    old_mask = lambda y: y < n_old if n_old < n_all else None  # noqa: E731
    pred_old = {s: predict_logits(m1, scenario.split(s)[0]).argmax(1)
                    for s in ("val", "test") if scenario.split(s)[1].numel()}  # val may be empty

    def val_metrics(model) -> dict[str, float]:
        if scenario.val_idx.numel() == 0:
            return {}
        return compute_metrics(scenario.y_val, pred_old["val"], predict_logits(model, scenario.x_val).argmax(1),
                               old_class_mask=old_mask(scenario.y_val))

    def new_model(init: str) -> torch.nn.Module:
        fresh = build_model(cfg.model_name, n_all, scenario.dataset.input_shape, seed=cfg.seed + 1).to(device)
        return expand_outputs(m1, fresh, n_old) if init == "old" else fresh

    inputs = ReferenceInputs(scenario.x_train, scenario.y_train, scenario.x_update, scenario.y_update, m1, new_model)
    t = time.perf_counter()
    references = {ref: refs.get(ref, inputs) for ref in method.needs}
    timings["references"] = time.perf_counter() - t

    ctx = UpdateContext(scenario.x_update, scenario.y_update, n_old, n_all, m1, new_model, upd_recipe,
                        cfg.seed + 1, device, references, dict(refs.keys), store.derived)
    models = [method.initial_model(ctx, dict(c.hparams)) for c in configs]
    loss_fns = [method.make_loss(ctx, dict(c.hparams)) for c in configs]

    def on_epoch(epoch: int, losses: dict[int, float]) -> set[int]:
        if stop_members is None or epoch >= upd_recipe.epochs:
            return set()
        return set(stop_members(epoch, {k: val_metrics(models[k]) for k in losses}))

    t = time.perf_counter()
    members = fit_pack(models, scenario.x_update, scenario.y_update, [c.update_recipe for c in configs],
                       seed=cfg.seed + 1, loss_fns=loss_fns, on_epoch=on_epoch)
    timings["update"] = time.perf_counter() - t
    timings.update({f"ref_{k}": v for k, v in refs.seconds.items() if k != "m1"})
    critical = critical_test_mask(cfg, scenario.y_test)
    description = {k: v for k, v in describe(scenario).items() if k not in ("per_class", "class_names")}

    results = []
    for c, model, member in zip(configs, models, members):
        result = TrialResult(c, {}, epochs=member.epochs, timings=dict(timings), references=dict(refs.status),
                             scenario=description, old_model=m1, info=method.facts(ctx, dict(c.hparams)))
        t = time.perf_counter()
        if member.status == "diverged":
            result.status, result.error = "diverged", member.error
        else:
            model.eval()
            result.metrics = {VAL_PREFIX + k: v for k, v in val_metrics(model).items()}
            if member.status == "stopped":
                result.status = "stopped"  # an early-stopped update is never evaluated on the test set
            else:
                pred_new = predict_logits(model, scenario.x_test).argmax(1)
                result.metrics.update(compute_metrics(scenario.y_test, pred_old["test"], pred_new,
                                                      old_class_mask=old_mask(scenario.y_test), critical_mask=critical))
            result.model = model
        result.timings["eval"] = time.perf_counter() - t
        result.timings["total"] = time.perf_counter() - t_start
        results.append(result)
    return results
