"""One update trial, end to end: scenario -> M1 -> update method -> M2 -> metrics.

`run_trial(TrialConfig)` is what `flipsearch trial` runs and what every sweep trial runs on
a Ray worker. It never trains a reference model that a `ReferenceStore` already holds.
Every metric is computed on the validation split (`val_<metric>`, what a search selects
on) and on the test set (`<metric>`, what is reported); `epoch_report` sees validation
metrics only, after each update epoch, and may stop the update early.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .arrangements import Scenario, describe, explicit_scenario, make_scenario
from .config import TrialConfig
from .data import Dataset, load_dataset, subsample
from .errors import DivergedError, UsageError
from .methods import UpdateContext, get_method
from .metrics import compute_metrics
from .models import build_model, expand_outputs
from .references import ReferenceBuilder, ReferenceInputs, ReferenceStore
from .train import pick_device, predict_logits

VAL_PREFIX = "val_"
# epoch_report(epoch, val_metrics, seconds) -> True to stop the update there
EpochReport = Callable[[int, dict[str, float], float], bool]

@dataclass
class TrialResult:
    """What a trial produced. `metrics` holds the test metrics by name and the validation
    metrics as `val_<name>`; `status` is ok, diverged or stopped (by `epoch_report`), and
    `epochs` the update epochs run."""

    config: TrialConfig
    metrics: dict[str, float]
    status: str = "ok"  # ok | diverged | stopped
    error: str = ""
    epochs: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    references: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    scenario: dict[str, Any] = field(default_factory=dict)
    model: torch.nn.Module | None = field(default=None, repr=False)  # M2, for callers that save it
    old_model: torch.nn.Module | None = field(default=None, repr=False)  # M1

    @property
    def hparams(self) -> dict[str, Any]:
        return dict(self.config.hparams)

    def to_json(self) -> dict:
        return {"status": self.status, "error": self.error, "epochs": self.epochs, "config": self.config.to_dict(),
                "metrics": {k: _json_num(v) for k, v in self.metrics.items()},
                "scenario": self.scenario, "references": self.references, "info": self.info,
                "timings": {k: round(v, 4) for k, v in self.timings.items()}}


def _json_num(v):
    return None if isinstance(v, float) and math.isnan(v) else v


def load_data(cfg: TrialConfig) -> Dataset:
    """The config's dataset at its pool and test scales."""
    return subsample(load_dataset(cfg.dataset, cfg.data_root, cfg.download), cfg.scale, test_fraction=cfg.test_scale)


def load_scenario(cfg: TrialConfig, dataset: Dataset | None = None) -> Scenario:
    if cfg.explicit:
        return explicit_scenario(*cfg.explicit, val_path=cfg.val_path, val_fraction=cfg.val_fraction)
    if dataset is None:
        dataset = load_data(cfg)
    return make_scenario(dataset, cfg.arrangement, cfg.seed, cfg.old_fraction, cfg.val_fraction)


def critical_test_mask(cfg: TrialConfig, y_test: torch.Tensor) -> torch.Tensor | None:
    if cfg.critical_mask:
        import numpy as np

        try:
            mask = torch.as_tensor(np.load(cfg.critical_mask)).bool().flatten()
        except (OSError, ValueError) as e:
            raise UsageError(f"cannot read critical mask {cfg.critical_mask!r}: {e}") from None
        if len(mask) != len(y_test):
            raise UsageError(f"critical mask has {len(mask)} entries but the test set has {len(y_test)}")
        return mask.to(y_test.device)
    if cfg.critical_classes:
        return torch.isin(y_test, torch.tensor(cfg.critical_classes, device=y_test.device))
    return None


def run_trial(cfg: TrialConfig, *, store: ReferenceStore | None = None, dataset: Dataset | None = None,
              epoch_report: EpochReport | None = None,
              progress: Callable[[str, int, int, float], None] | None = None) -> TrialResult:
    """Run one trial. A NaN/inf loss ends it early with status `diverged`; `epoch_report`
    returning True ends the update early with status `stopped`; other errors propagate
    (the sweep records them as `failed`)."""
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    method = get_method(cfg.method)
    m1_recipe, upd_recipe = cfg.recipes()
    device = pick_device(cfg.device)
    store = store or ReferenceStore()

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
    result = TrialResult(cfg, {}, timings=timings, references=refs.status)
    old_mask = lambda y: y < n_old if n_old < n_all else None  # noqa: E731
    try:
        t = time.perf_counter()
        m1 = refs.m1(scenario.x_train, scenario.y_train)
        timings["m1"] = time.perf_counter() - t
        result.old_model = m1
        pred_old = {s: predict_logits(m1, scenario.split(s)[0]).argmax(1)
                    for s in ("val", "test") if scenario.split(s)[1].numel()}  # val may be empty

        def val_metrics(model: torch.nn.Module) -> dict[str, float]:
            if scenario.val_idx.numel() == 0:
                return {}
            # Critical classes mark validation samples too (a critical-sample mask covers the test set only),
            # so a search on critical_* objectives selects on validation like any other.
            crit = torch.isin(scenario.y_val, torch.tensor(cfg.critical_classes, device=scenario.y_val.device)) \
                if cfg.critical_classes else None
            return compute_metrics(scenario.y_val, pred_old["val"], predict_logits(model, scenario.x_val).argmax(1),
                                   old_class_mask=old_mask(scenario.y_val), critical_mask=crit)

        def new_model(init: str) -> torch.nn.Module:
            fresh = build_model(cfg.model_name, n_all, scenario.dataset.input_shape, seed=cfg.seed + 1).to(device)
            if init == "old":
                fresh = expand_outputs(m1, fresh, n_old)
            return fresh

        inputs = ReferenceInputs(scenario.x_train, scenario.y_train, scenario.x_update, scenario.y_update, m1,
                                 new_model)
        t_update = time.perf_counter()
        references = {ref: refs.get(ref, inputs) for ref in method.needs}
        ref_seconds = time.perf_counter() - t_update
        t_update = time.perf_counter()

        def epoch_end(epoch: int, loss: float, model: torch.nn.Module) -> bool:
            result.epochs = epoch
            if progress is not None:
                progress("update", epoch, upd_recipe.epochs, loss)
            if epoch_report is None or epoch >= upd_recipe.epochs:
                return False
            return bool(epoch_report(epoch, val_metrics(model), time.perf_counter() - t_start))

        ctx = UpdateContext(scenario.x_update, scenario.y_update, n_old, n_all, m1, new_model, upd_recipe,
                            cfg.seed + 1, device, references, dict(refs.keys), store.derived, epoch_end)
        updated = method.update(ctx, dict(cfg.hparams))
        timings["update"] = time.perf_counter() - t_update
        timings.update({f"ref_{k}": v for k, v in refs.seconds.items() if k != "m1"})
        timings["references"] = ref_seconds
        result.epochs = updated.fit.stopped_at or upd_recipe.epochs if updated.fit else upd_recipe.epochs
        result.info = dict(updated.info)
        if cfg.old_model:
            # A user's M1 comes without its training recipe: nothing here retrains M1, and the
            # references that need a recipe (φ_new, the CE update) use the update recipe.
            result.info["m1_source"] = "user checkpoint; its training recipe is unknown and not needed"

        t = time.perf_counter()
        result.metrics = {VAL_PREFIX + k: v for k, v in val_metrics(updated.model).items()}
        if updated.fit is not None and updated.fit.stopped_at:
            result.status = "stopped"  # an early-stopped update is never evaluated on the test set
        else:
            pred_new = predict_logits(updated.model, scenario.x_test).argmax(1)
            result.metrics.update(compute_metrics(scenario.y_test, pred_old["test"], pred_new,
                                                  old_class_mask=old_mask(scenario.y_test),
                                                  critical_mask=critical_test_mask(cfg, scenario.y_test)))
        timings["eval"] = time.perf_counter() - t
        result.model = updated.model
    except DivergedError as e:
        result.status, result.error = "diverged", str(e)
    result.scenario = {k: v for k, v in describe(scenario).items() if k not in ("per_class", "class_names")}
    timings["total"] = time.perf_counter() - t_start
    return result


def preflight(cfg: TrialConfig, dataset: Dataset | None = None) -> Scenario:
    """Every check a trial makes before it trains, and its scenario: the split exists and
    is non-empty, critical classes and mask fit, the model builds (a user factory imports),
    a user M1 loads into it, and the method accepts the recipe. The sweep driver runs it
    for every scenario and method before Ray starts."""
    from .references import load_user_state

    method = get_method(cfg.method)
    method.check(cfg)
    if cfg.old_model:
        _check_readable(cfg.old_model)
    scenario = load_scenario(cfg, dataset)
    check_critical(cfg, scenario)
    shape = scenario.dataset.input_shape
    # A user factory is called here too, on the driver, so one that raises fails before Ray
    # starts (tests/flipsearch_faults.py's factories fault while training, not while building).
    build_model(cfg.model_name, scenario.num_classes, shape)
    if cfg.old_model:
        load_user_state(build_model(cfg.model_name, scenario.num_old_classes, shape), cfg.old_model,
                        f"model {cfg.model_name!r} with {scenario.num_old_classes} outputs")
    method.check_scenario(cfg, scenario)
    return scenario


def _check_readable(path: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise UsageError(f"cannot read old model {path!r}: {e.strerror}") from None


def check_critical(cfg: TrialConfig, scenario: Scenario) -> None:
    """Critical classes must exist and a critical mask must cover the test set: checked
    before any training (the sweep driver calls it too)."""
    _check_critical_classes(cfg, scenario.num_classes)
    if cfg.critical_mask:
        critical_test_mask(cfg, scenario.y_test)


def _check_critical_classes(cfg: TrialConfig, num_classes: int) -> None:
    bad = [c for c in cfg.critical_classes if not 0 <= c < num_classes]
    if bad:
        raise UsageError(f"critical classes {bad} do not exist; classes are 0..{num_classes - 1}")


def _fingerprint(scenario: Scenario) -> str:
    """A cheap content hash of the scenario's data, so user data that changes on disk under
    the same name never reuses a stale reference model."""
    h = hashlib.sha256()
    for t in (scenario.train_idx, scenario.update_idx, scenario.val_idx, scenario.dataset.y_train,
              scenario.dataset.y_test):
        h.update(t.cpu().numpy().tobytes())
    h.update(scenario.dataset.x_train.flatten()[:: max(1, scenario.dataset.x_train.numel() // 4096)]
             .cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _file_sha256(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError as e:
        raise UsageError(f"cannot read old model {path!r}: {e.strerror}") from None
