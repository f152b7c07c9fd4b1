"""One update trial, end to end: scenario -> M1 -> update method -> M2 -> metrics.

`run_trial(TrialConfig)` is what `flipsearch trial` runs and what every sweep trial runs on
a Ray worker. It never trains a reference model that a `ReferenceStore` already holds.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable

import torch

from .arrangements import Scenario, describe, explicit_scenario, make_scenario
from .data import Dataset, load_dataset, subsample
from .errors import DivergedError, UsageError
from .methods import UpdateContext, get_method
from .metrics import compute_metrics
from .models import DEFAULT_MODEL, build_model, expand_outputs
from .references import ReferenceBuilder, ReferenceStore
from .train import TrainRecipe, pick_device, predict_logits

# Training recipes that suit each built-in dataset (paper 1: 5 epochs, batch 128).
DEFAULT_RECIPES: dict[str, TrainRecipe] = {
    "digits": TrainRecipe(epochs=10, batch_size=32, lr=0.05),
    "fashion-mnist": TrainRecipe(epochs=5, batch_size=128, lr=0.05),
    "cifar10": TrainRecipe(epochs=5, batch_size=128, lr=0.05),
    "cifar100": TrainRecipe(epochs=100, batch_size=128, lr=0.1, schedule="cosine", augment=True),
}
GENERIC_RECIPE = TrainRecipe(epochs=5, batch_size=64, lr=0.05)

RECIPE_KEYS = tuple(TrainRecipe.__dataclass_fields__)


@dataclass(frozen=True)
class TrialConfig:
    """Everything that determines a trial. `hparams` are the method's own; the two recipes
    train M1 (and φ_new) and the update."""

    dataset: str = "digits"
    arrangement: str = "exclusive-op"
    method: str = "ce"
    seed: int = 0
    model: str | None = None
    hparams: dict[str, Any] = field(default_factory=dict)
    m1_recipe: TrainRecipe | None = None
    update_recipe: TrainRecipe | None = None
    old_fraction: float = 0.5
    critical_classes: tuple[int, ...] = ()
    critical_mask: str | None = None  # path of a .npy bool mask over the test set
    data_root: str | None = None
    download: bool = False
    subset: float = 1.0  # stratified share of the training pool and test set to use
    old_model: str | None = None  # a user's trained M1 (state_dict checkpoint)
    explicit: tuple[str, str, str] | None = None  # (train, update, test) paths
    device: str = "auto"

    @property
    def model_name(self) -> str:
        return self.model or DEFAULT_MODEL.get(self.dataset, "cnn8")

    def recipes(self) -> tuple[TrainRecipe, TrainRecipe]:
        base = DEFAULT_RECIPES.get(self.dataset, GENERIC_RECIPE)
        return self.m1_recipe or base, self.update_recipe or base

    def with_settings(self, settings: dict[str, Any]) -> "TrialConfig":
        """Apply `--set key=value` overrides: training keys (`epochs`, `lr`, …) change both
        recipes, `m1.KEY` / `update.KEY` one of them; anything else is a method
        hyperparameter, validated against the method's schema."""
        m1, upd = self.recipes()
        m1_kw, upd_kw, hp = {}, {}, dict(self.hparams)
        for key, value in settings.items():
            scope, _, name = key.rpartition(".")
            if scope in ("m1", "update"):
                if name not in RECIPE_KEYS:
                    raise UsageError(f"unknown training setting {key!r}; known: "
                                     + ", ".join(f"{scope}.{k}" for k in RECIPE_KEYS))
                (m1_kw if scope == "m1" else upd_kw)[name] = value
            elif scope:
                raise UsageError(f"unknown setting {key!r}: prefix must be 'm1.' or 'update.'")
            elif name in RECIPE_KEYS:
                m1_kw[name] = upd_kw[name] = value
            else:
                hp[name] = value
        get_method(self.method).resolve(hp)  # unknown or illegal values fail here, before work
        return replace(self, hparams=hp, m1_recipe=m1.with_overrides(**m1_kw),
                       update_recipe=upd.with_overrides(**upd_kw))


@dataclass
class TrialResult:
    config: TrialConfig
    hparams: dict[str, Any]
    metrics: dict[str, float]
    status: str = "ok"  # ok | diverged | failed
    error: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    references: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    scenario: dict[str, Any] = field(default_factory=dict)
    model: torch.nn.Module | None = field(default=None, repr=False)  # M2, for callers that save it

    def to_json(self) -> dict:
        m1, upd = self.config.recipes()
        cfg = {k: v for k, v in asdict(self.config).items()
               if k not in ("hparams", "m1_recipe", "update_recipe")}
        cfg.update(model=self.config.model_name, m1_recipe=m1.as_dict(), update_recipe=upd.as_dict())
        return {"status": self.status, "error": self.error, "config": cfg, "hparams": self.hparams,
                "metrics": {k: _json_num(v) for k, v in self.metrics.items()},
                "scenario": self.scenario, "references": self.references, "info": self.info,
                "timings": {k: round(v, 4) for k, v in self.timings.items()}}

    def to_row(self) -> dict[str, Any]:
        """One flat row for the results table: hyperparameters as `hp_*`, recipes as
        `m1_*` / `update_*`, references as `ref_*`, method facts as `info_*`."""
        c = self.config
        m1, upd = c.recipes()
        row: dict[str, Any] = {
            "dataset": c.dataset, "arrangement": c.arrangement, "method": c.method, "model": c.model_name,
            "seed": c.seed, "old_fraction": c.old_fraction,
            "critical_classes": ",".join(map(str, c.critical_classes)),
            "status": self.status, "error": self.error,
        }
        row.update({f"hp_{k}": v for k, v in self.hparams.items()})
        row.update({f"m1_{k}": v for k, v in m1.as_dict().items()})
        row.update({f"update_{k}": v for k, v in upd.as_dict().items()})
        row.update(self.metrics)
        row.update({f"ref_{k}": v for k, v in self.references.items()})
        row.update({f"seconds_{k}": v for k, v in self.timings.items()})
        row.update({f"info_{k}": v for k, v in self.info.items() if isinstance(v, (int, float, str, bool))})
        return row


def _json_num(v):
    return None if isinstance(v, float) and math.isnan(v) else v


def load_subset(spec: str, data_root: str | None, download: bool, subset: float) -> Dataset:
    if not 0 < subset <= 1:
        raise UsageError(f"subset/scale must be in (0, 1], got {subset}")
    return subsample(load_dataset(spec, data_root, download), subset)


def load_scenario(cfg: TrialConfig, dataset: Dataset | None = None) -> Scenario:
    if cfg.explicit:
        return explicit_scenario(*cfg.explicit)
    if dataset is None:
        dataset = load_subset(cfg.dataset, cfg.data_root, cfg.download, cfg.subset)
    return make_scenario(dataset, cfg.arrangement, cfg.seed, cfg.old_fraction)


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
              progress: Callable[[str, int, int, float], None] | None = None) -> TrialResult:
    """Run one trial. A NaN/inf loss ends it early with status `diverged`; other errors
    propagate (the sweep records them as `failed`)."""
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    method = get_method(cfg.method)
    hp = method.resolve(cfg.hparams)
    m1_recipe, upd_recipe = cfg.recipes()
    device = pick_device(cfg.device)
    store = store or ReferenceStore()

    t = time.perf_counter()
    scenario = load_scenario(cfg, dataset).to(device)
    timings["data"] = time.perf_counter() - t
    n_old, n_all = scenario.num_old_classes, scenario.num_classes
    _check_critical_classes(cfg, n_all)
    spec = {"dataset": cfg.dataset if not cfg.explicit else list(cfg.explicit), "arrangement": scenario.arrangement,
            "old_fraction": cfg.old_fraction, "model": cfg.model_name, "seed": cfg.seed,
            "data_fingerprint": _fingerprint(scenario)}
    refs = ReferenceBuilder(store, spec, cfg.model_name, scenario.dataset.input_shape, n_old, n_all,
                            m1_recipe, upd_recipe, cfg.seed, device, cfg.old_model,
                            _file_sha256(cfg.old_model) if cfg.old_model else None)
    result = TrialResult(cfg, hp, {}, timings=timings, references=refs.status)
    try:
        t = time.perf_counter()
        m1 = refs.m1(scenario.x_train, scenario.y_train)
        timings["m1"] = time.perf_counter() - t

        def new_model(init: str) -> torch.nn.Module:
            fresh = build_model(cfg.model_name, n_all, scenario.dataset.input_shape, seed=cfg.seed + 1).to(device)
            if init == "old":
                fresh = expand_outputs(m1, fresh, n_old)
            return fresh

        def reference(kind: str):
            if kind == "phi_new":
                return refs.phi_new(scenario.x_update, scenario.y_update)
            if kind == "ce_update":
                return refs.ce_update(m1, scenario.x_update, scenario.y_update, new_model)
            raise KeyError(kind)

        epoch_cb = (lambda e, loss: progress("update", e, upd_recipe.epochs, loss)) if progress else None
        ctx = UpdateContext(scenario.x_update, scenario.y_update, n_old, n_all, m1, new_model, upd_recipe,
                            cfg.seed + 1, device, reference, epoch_cb)
        t = time.perf_counter()
        updated = method.update(ctx, hp)
        timings["update"] = time.perf_counter() - t - sum(refs.seconds.get(k, 0) for k in ("phi_new", "ce_update"))
        timings.update({f"ref_{k}": v for k, v in refs.seconds.items() if k != "m1"})
        result.info = dict(updated.info)
        if cfg.old_model:
            # A user's M1 comes without its training recipe: nothing here retrains M1, and the
            # references that need a recipe (φ_new, the CE update) use the update recipe.
            result.info["m1_source"] = "user checkpoint; its training recipe is unknown and not needed"

        t = time.perf_counter()
        pred_old = predict_logits(m1, scenario.x_test).argmax(1)
        pred_new = predict_logits(updated.model, scenario.x_test).argmax(1)
        result.metrics = compute_metrics(
            scenario.y_test, pred_old, pred_new,
            old_class_mask=scenario.old_class_test_mask if n_old < n_all else None,
            critical_mask=critical_test_mask(cfg, scenario.y_test))
        timings["eval"] = time.perf_counter() - t
        result.model = updated.model
    except DivergedError as e:
        result.status, result.error = "diverged", str(e)
    result.scenario = {k: v for k, v in describe(scenario).items() if k not in ("per_class", "class_names")}
    timings["total"] = time.perf_counter() - t_start
    return result


def _check_critical_classes(cfg: TrialConfig, num_classes: int) -> None:
    bad = [c for c in cfg.critical_classes if not 0 <= c < num_classes]
    if bad:
        raise UsageError(f"critical classes {bad} do not exist; classes are 0..{num_classes - 1}")


def _fingerprint(scenario: Scenario) -> str:
    """A cheap content hash of the scenario's data, so user data that changes on disk under
    the same name never reuses a stale reference model."""
    h = hashlib.sha256()
    for t in (scenario.train_idx, scenario.update_idx, scenario.dataset.y_train, scenario.dataset.y_test):
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
