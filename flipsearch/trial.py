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

from . import numerics
from .arrangements import Scenario, describe, explicit_scenario, make_scenario
from .config import TrialConfig
from .data import Dataset, load_dataset, subsample
from .errors import DivergedError, UsageError
from .methods import UpdateContext, get_method
from .metrics import compute_metrics
from .models import build_model, expand_outputs
from .objectives import SELECTION_PREFIX
from .references import ReferenceBuilder, ReferenceInputs, ReferenceStore
from .train import eval_batch_size, pick_device, predict_logits

VAL_PREFIX = SELECTION_PREFIX
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
    reference_keys: dict[str, str] = field(default_factory=dict)  # kind -> content address (M1's in references/)
    info: dict[str, Any] = field(default_factory=dict)
    scenario: dict[str, Any] = field(default_factory=dict)
    model: torch.nn.Module | None = field(default=None, repr=False)  # M2, for callers that save it
    old_model: torch.nn.Module | None = field(default=None, repr=False)  # M1
    numerics: dict[str, Any] = field(default_factory=dict)  # what decides its floats (`flipsearch.numerics`)

    @property
    def hparams(self) -> dict[str, Any]:
        return dict(self.config.hparams)

    def to_json(self) -> dict:
        return {"status": self.status, "error": self.error, "epochs": self.epochs, "config": self.config.to_dict(),
                "metrics": {k: _json_num(v) for k, v in self.metrics.items()},
                "scenario": self.scenario, "references": self.references, "info": self.info,
                "numerics": self.numerics,
                "timings": {k: round(v, 4) for k, v in self.timings.items()}}


def _json_num(v):
    return None if isinstance(v, float) and math.isnan(v) else v


def load_data(cfg: TrialConfig) -> Dataset:
    """The config's dataset at its pool and test scales."""
    return subsample(load_dataset(cfg.dataset, cfg.data_root, cfg.download), cfg.scale, test_fraction=cfg.test_scale)


def load_scenario(cfg: TrialConfig, dataset: Dataset | None = None) -> Scenario:
    """The trial's scenario (D_train, D_update, validation and test splits): an explicit one, or the
    arrangement of `dataset` (loaded when not given)."""
    if cfg.explicit:
        return explicit_scenario(*cfg.explicit, val_path=cfg.val_path, val_fraction=cfg.val_fraction)
    if dataset is None:
        dataset = load_data(cfg)
    return make_scenario(dataset, cfg.arrangement, cfg.seed, cfg.old_fraction, cfg.val_fraction)


def critical_test_mask(cfg: TrialConfig, y_test: torch.Tensor) -> torch.Tensor | None:
    """The bool mask over the test set of the samples that must not flip (from `critical_mask` or
    `critical_classes`), or None."""
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


class PreparedTrial:
    """What every update of one configuration's scenario shares, built once: the scenario
    on its device, the reference builder (M1, φ_new, the CE update, cached in `store`), M1's
    predictions, and the evaluation on the validation and test splits. `run_trial` makes
    one update from it; `pack_trial.run_pack` makes K (configs that differ only in their
    method's hyperparameters)."""

    def __init__(self, cfg: TrialConfig, store: ReferenceStore | None = None, dataset: Dataset | None = None):
        self.cfg = cfg
        self.device = pick_device(cfg.device)
        numerics.apply(self.device)
        self.store = store or ReferenceStore()
        self.m1_recipe, self.update_recipe = cfg.recipes()
        self.timings: dict[str, float] = {}
        t = time.perf_counter()
        self.scenario = preflight(cfg, dataset).to(self.device)
        self.timings["data"] = time.perf_counter() - t
        self.n_old, self.n_all = self.scenario.num_old_classes, self.scenario.num_classes
        spec = {"dataset": cfg.dataset if not cfg.explicit else list(cfg.explicit),
                "arrangement": self.scenario.arrangement, "old_fraction": cfg.old_fraction,
                "model": cfg.model_name, "seed": cfg.seed, "data_fingerprint": _fingerprint(self.scenario)}
        self.refs = ReferenceBuilder(self.store, spec, cfg.model_name, self.scenario.dataset.input_shape,
                                     self.n_old, self.n_all, self.m1_recipe, self.update_recipe, cfg.seed,
                                     self.device, cfg.old_model,
                                     _file_sha256(cfg.old_model) if cfg.old_model else None)
        self.m1: torch.nn.Module | None = None
        self._pred_old: dict[str, torch.Tensor] = {}

    def load_m1(self) -> torch.nn.Module:
        """M1 (from the store, the user's checkpoint, or trained now) and its predictions."""
        t = time.perf_counter()
        self.m1 = self.refs.m1(self.scenario.x_train, self.scenario.y_train)
        self.timings["m1"] = time.perf_counter() - t
        self._pred_old = {s: predict_logits(self.m1, self.scenario.split(s)[0]).argmax(1)
                          for s in ("val", "test") if self.scenario.split(s)[1].numel()}  # val may be empty
        return self.m1

    def new_model(self, init: str) -> torch.nn.Module:
        """A fresh M2 of the update's shape: M1's weights (`old`) or a new initialisation."""
        fresh = build_model(self.cfg.model_name, self.n_all, self.scenario.dataset.input_shape,
                            seed=self.cfg.seed + 1).to(self.device)
        return expand_outputs(self.m1, fresh, self.n_old) if init == "old" else fresh

    def context(self, method, epoch_end: Callable | None = None) -> UpdateContext:
        """The update's context, with the references `method` needs built or loaded."""
        s = self.scenario
        inputs = ReferenceInputs(s.x_train, s.y_train, s.x_update, s.y_update, self.m1, self.new_model)
        t = time.perf_counter()
        references = {ref: self.refs.get(ref, inputs) for ref in method.needs}
        self.timings["references"] = time.perf_counter() - t
        return UpdateContext(s.x_update, s.y_update, self.n_old, self.n_all, self.m1, self.new_model,
                             self.update_recipe, self.cfg.seed + 1, self.device, references, dict(self.refs.keys),
                             self.store.derived, epoch_end)

    def _old_mask(self, y: torch.Tensor) -> torch.Tensor | None:
        return y < self.n_old if self.n_old < self.n_all else None

    def val_metrics(self, model: torch.nn.Module) -> dict[str, float]:
        """Every metric on the validation split (empty when there is none)."""
        s = self.scenario
        if s.val_idx.numel() == 0:
            return {}
        # Critical classes mark validation samples too (a critical-sample mask covers the test set only),
        # so a search on critical_* objectives selects on validation like any other.
        crit = torch.isin(s.y_val, torch.tensor(self.cfg.critical_classes, device=s.y_val.device)) \
            if self.cfg.critical_classes else None
        return compute_metrics(s.y_val, self._pred_old["val"], predict_logits(model, s.x_val).argmax(1),
                               old_class_mask=self._old_mask(s.y_val), critical_mask=crit)

    def test_metrics(self, model: torch.nn.Module) -> dict[str, float]:
        s = self.scenario
        return compute_metrics(s.y_test, self._pred_old["test"], predict_logits(model, s.x_test).argmax(1),
                               old_class_mask=self._old_mask(s.y_test),
                               critical_mask=critical_test_mask(self.cfg, s.y_test))

    def evaluate(self, result: TrialResult, model: torch.nn.Module, stopped: bool) -> None:
        """Fill `result` for the update `model`: validation metrics always; test metrics
        unless the update was stopped early (a stopped update is never evaluated on test)."""
        t = time.perf_counter()
        model.eval()
        result.metrics = {VAL_PREFIX + k: v for k, v in self.val_metrics(model).items()}
        if stopped:
            result.status = "stopped"
        else:
            result.metrics.update(self.test_metrics(model))
        result.model = model
        result.timings["eval"] = time.perf_counter() - t
        result.timings.update({f"ref_{k}": v for k, v in self.refs.seconds.items() if k != "m1"})

    def numerics(self) -> dict[str, Any]:
        """This trial's numerics (torch version, threads, device, precision): its row's columns."""
        from .numerics import numerics

        return numerics(self.device, self.m1_recipe.amp, self.update_recipe.amp)

    def describe(self) -> dict[str, Any]:
        return {k: v for k, v in describe(self.scenario).items() if k not in ("per_class", "class_names")}


def run_trial(cfg: TrialConfig, *, store: ReferenceStore | None = None, dataset: Dataset | None = None,
              epoch_report: EpochReport | None = None,
              progress: Callable[[str, int, int, float], None] | None = None) -> TrialResult:
    """Run one trial. A NaN/inf loss ends it early with status `diverged`; `epoch_report`
    returning True ends the update early with status `stopped`; other errors propagate
    (the sweep records them as `failed`)."""
    t_start = time.perf_counter()
    method = get_method(cfg.method)
    prep = PreparedTrial(cfg, store, dataset)
    epochs = prep.update_recipe.epochs
    result = TrialResult(cfg, {}, timings=prep.timings, references=prep.refs.status, reference_keys=prep.refs.keys,
                         numerics=prep.numerics())
    try:
        result.old_model = prep.load_m1()

        def epoch_end(epoch: int, loss: float, model: torch.nn.Module) -> bool:
            result.epochs = epoch
            if progress is not None:
                progress("update", epoch, epochs, loss)
            if epoch_report is None or epoch >= epochs:
                return False
            return bool(epoch_report(epoch, prep.val_metrics(model), time.perf_counter() - t_start))

        ctx = prep.context(method, epoch_end)
        t_update = time.perf_counter()
        updated = method.update(ctx, dict(cfg.hparams))
        prep.timings["update"] = time.perf_counter() - t_update
        stopped_at = updated.fit.stopped_at if updated.fit is not None else None
        result.epochs = stopped_at or epochs
        result.info = dict(updated.info)
        if cfg.old_model:
            # A user's M1 comes without its training recipe: nothing here retrains M1, and the
            # references that need a recipe (φ_new, the CE update) use the update recipe.
            result.info["m1_source"] = "user checkpoint; its training recipe is unknown and not needed"
        prep.evaluate(result, updated.model, stopped=bool(stopped_at))
    except DivergedError as e:
        result.status, result.error = "diverged", str(e)
    result.scenario = prep.describe()
    prep.timings["total"] = time.perf_counter() - t_start
    return result


def preflight(cfg: TrialConfig, dataset: Dataset | None = None) -> Scenario:
    """Every check a trial makes before it trains, and its scenario: the split exists and
    is non-empty, critical classes and mask fit, the model builds (a user factory imports),
    a user M1 loads into it, and the method accepts the recipe. The sweep driver runs it
    for every scenario and method before Ray starts."""
    from .references import load_user_state

    method = get_method(cfg.method)
    method.check(cfg)
    eval_batch_size()  # a bad FLIPSEARCH_EVAL_BATCH is refused before any training
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
    the same name, or a scenario option that changes the splits' labels, never reuses a
    stale reference model."""
    h = hashlib.sha256()
    for t in (scenario.train_idx, scenario.update_idx, scenario.val_idx, scenario.y_train, scenario.y_update,
              scenario.y_val, scenario.dataset.y_test):
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
