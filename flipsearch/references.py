"""Reference models, trained once and shared: M1, φ_new (MPT) and the CE update (NeuRecover).

A reference model is a pure function of (dataset, arrangement, model, seed, recipe), so it is
stored content-addressed: its file name is the SHA-256 of that description. Every trial that
needs it loads it; only the first trains it. Files are published atomically with a SHA-256
sidecar; a file that fails its checksum is retrained, never loaded. Per-key locks stop two
trials from training the same model at once (file locks on a local/NFS path; the sweep
passes a Ray-actor lock for object stores).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager

import torch
from torch import nn

from .errors import UsageError
from .models import build_model
from .storage import Storage
from .train import TrainRecipe, fit, predict_logits

log = logging.getLogger(__name__)

REPAIR_FRACTION = 0.2  # share of D_update held out for NeuRecover's repair split


def reference_key(kind: str, spec: dict) -> str:
    """Content address of a reference model: sha256 over a canonical JSON description."""
    blob = json.dumps({"kind": kind, **spec}, sort_keys=True, default=str).encode()
    return f"{kind}-{hashlib.sha256(blob).hexdigest()[:32]}"


def _serialise(payload: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


class ReferenceStore:
    """A cache of reference-model payloads (dicts of tensors and plain values).

    `storage=None` keeps them in memory only (a single `flipsearch trial`). Counters
    `trained` and `hits` feed the sweep's log line and the result rows.
    """

    def __init__(self, storage: Storage | None = None,
                 lock: Callable[[str], ContextManager] | None = None):
        self.storage = storage
        self._lock = lock or self._default_lock
        self._memory: dict[str, dict] = {}
        # Logits of this store's reference models over data tensors (teacher logits), kept
        # for the store's life: see `reference_logits`.
        self.logits: dict[tuple, torch.Tensor] = {}
        # Other per-process results derived from its reference models (e.g. NeuRecover's
        # localisation inputs): see `reference_derived`.
        self.derived: dict[tuple, Any] = {}
        self.trained = 0
        self.hits = 0
        self.corrupt = 0

    def _default_lock(self, key: str) -> ContextManager:
        if self.storage is not None and self.storage.is_local:
            from filelock import FileLock

            self.storage.makedirs()
            return FileLock(self.storage.path(f"{key}.lock"))
        return contextlib.nullcontext()

    def get_or_build(self, key: str, build: Callable[[], dict]) -> tuple[dict, bool]:
        """The payload under `key`, building and publishing it if absent. Returns
        (payload, hit) where hit is False only for the caller that trained it."""
        if key in self._memory:
            self.hits += 1
            return self._memory[key], True
        if self.storage is None:
            payload = build()
            self.trained += 1
            self._memory[key] = payload
            return payload, False
        with self._lock(key):
            payload = self._load(key)
            hit = payload is not None
            if payload is None:
                payload = build()
                data = _serialise(payload)
                self.storage.write_bytes(data, f"{key}.pt")
                # The checksum is published last: a payload without one is never trusted.
                self.storage.write_bytes(hashlib.sha256(data).hexdigest().encode(), f"{key}.sha256")
                self.trained += 1
            else:
                self.hits += 1
        self._memory[key] = payload
        return payload, hit

    def _load(self, key: str) -> dict | None:
        if not (self.storage.exists(f"{key}.pt") and self.storage.exists(f"{key}.sha256")):
            return None
        data = self.storage.read_bytes(f"{key}.pt")
        want = self.storage.read_bytes(f"{key}.sha256").decode().strip()
        if hashlib.sha256(data).hexdigest() != want:
            self.corrupt += 1
            log.warning("reference model %s failed its checksum; retraining it", key)
            return None
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


@dataclass
class CEUpdate:
    """NeuRecover's input: M1 fine-tuned with CE on D_update minus the repair split."""

    model: nn.Module
    history: list[dict[str, torch.Tensor]]
    repair_idx: torch.Tensor
    train_idx: torch.Tensor


def repair_split(y: torch.Tensor, seed: int, fraction: float = REPAIR_FRACTION) -> tuple[torch.Tensor, torch.Tensor]:
    """Stratified (repair_idx, train_idx) over D_update's labels, deterministic from seed."""
    from .data import stratified_holdout

    train_idx, repair_idx = stratified_holdout(y.cpu().numpy(), fraction, seed + 7919)
    return torch.from_numpy(repair_idx), torch.from_numpy(train_idx)


@dataclass
class ReferenceBuilder:
    """Builds (or fetches) the reference models of one scenario for one trial."""

    store: ReferenceStore
    spec: dict  # identifies the scenario: dataset, arrangement, old_fraction, model, seed
    model_name: str
    input_shape: tuple[int, int, int]
    num_old_classes: int
    num_classes: int
    m1_recipe: TrainRecipe
    update_recipe: TrainRecipe
    seed: int
    device: torch.device
    old_model_path: str | None = None
    old_model_sha: str | None = None
    status: dict[str, str] = field(default_factory=dict)  # kind -> "hit" | "miss" | "user"
    keys: dict[str, str] = field(default_factory=dict)  # kind -> content address
    seconds: dict[str, float] = field(default_factory=dict)

    def _model(self, num_classes: int, state: dict | None = None, seed: int | None = None) -> nn.Module:
        model = build_model(self.model_name, num_classes, self.input_shape, seed=seed)
        if state is not None:
            model.load_state_dict(state)
        return model.to(self.device)

    def _fetch(self, kind: str, extra: dict, build: Callable[[], dict]) -> dict:
        t0 = time.perf_counter()
        key = reference_key(kind, {**self.spec, **extra})
        payload, hit = self.store.get_or_build(key, build)
        self.keys[kind] = key
        self.status[kind] = "hit" if hit else "miss"
        self.seconds[kind] = time.perf_counter() - t0
        return payload

    def m1_key_spec(self) -> dict:
        if self.old_model_path:
            return {"old_model_sha256": self.old_model_sha}
        return {"m1_recipe": self.m1_recipe.as_dict()}

    def m1(self, x_train: torch.Tensor, y_train: torch.Tensor) -> nn.Module:
        if self.old_model_path:
            try:
                state = torch.load(self.old_model_path, map_location="cpu", weights_only=True)
            except Exception as e:  # noqa: BLE001 - any unreadable or non-weights file
                raise UsageError(f"cannot load old model {self.old_model_path!r} as a state_dict "
                                 f"(weights_only): {str(e).splitlines()[0]}") from None
            if isinstance(state, dict) and "state_dict" in state:
                state = state["state_dict"]
            model = self._model(self.num_old_classes)
            try:
                model.load_state_dict(state)
            except (RuntimeError, TypeError, AttributeError) as e:
                raise UsageError(f"old model {self.old_model_path!r} does not fit model {self.model_name!r} with "
                                 f"{self.num_old_classes} outputs: {str(e).splitlines()[0]}") from None
            self.status["m1"] = "user"
            return model.eval()

        def build():
            model = self._model(self.num_old_classes, seed=self.seed)
            fit(model, x_train, y_train, self.m1_recipe, seed=self.seed)
            return {"state_dict": _cpu_state(model)}

        model = self._model(self.num_old_classes, self._fetch("m1", self.m1_key_spec(), build)["state_dict"])
        return _register(model.eval(), self.store, self.keys["m1"])

    def phi_new(self, x_update: torch.Tensor, y_update: torch.Tensor) -> nn.Module:
        """φ_new: trained from scratch with plain CE on the whole D_update (MPT)."""

        def build():
            model = self._model(self.num_classes, seed=self.seed + 2)
            fit(model, x_update, y_update, self.update_recipe, seed=self.seed + 2)
            return {"state_dict": _cpu_state(model)}

        payload = self._fetch("phi_new", {"update_recipe": self.update_recipe.as_dict()}, build)
        return _register(self._model(self.num_classes, payload["state_dict"]).eval(), self.store, self.keys["phi_new"])

    def ce_update(self, m1: nn.Module, x_update: torch.Tensor, y_update: torch.Tensor,
                  new_model: Callable[[str], nn.Module]) -> CEUpdate:
        """M1 fine-tuned with CE on D_update minus a held-out repair split, with the
        weights of its last two epochs (NeuRecover's training history)."""
        repair_idx, train_idx = repair_split(y_update, self.seed)

        def build():
            model = new_model("old")
            train_dev = train_idx.to(x_update.device)
            result = fit(model, x_update[train_dev], y_update[train_dev], self.update_recipe,
                         seed=self.seed + 1, keep_history=2)
            return {"state_dict": _cpu_state(model), "history": result.history}

        extra = {"update_recipe": self.update_recipe.as_dict(), "repair_fraction": REPAIR_FRACTION,
                 **self.m1_key_spec()}
        payload = self._fetch("ce_update", extra, build)
        model = _register(self._model(self.num_classes, payload["state_dict"]).eval(), self.store,
                          self.keys["ce_update"])
        return CEUpdate(model, payload["history"], repair_idx.to(x_update.device), train_idx.to(x_update.device))


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------- teacher logits

# Reference-model objects handed out by a `ReferenceBuilder` -> (store, content address,
# weights version at hand-out). Weak: a trial's model object dies with the trial.
_REFERENCES: "weakref.WeakKeyDictionary[nn.Module, tuple[ReferenceStore, str, int]]" = weakref.WeakKeyDictionary()


def _register(model: nn.Module, store: ReferenceStore, key: str) -> nn.Module:
    _REFERENCES[model] = (store, key, _weights_version(model))
    return model


def _weights_version(model: nn.Module) -> int:
    """Sum of the in-place version counters of the weights and buffers: it changes when
    anything writes to them (an optimiser step, `load_state_dict`)."""
    return sum(t._version for t in (*model.parameters(), *model.buffers()))


def _data_key(x: torch.Tensor) -> tuple:
    """Identifies the rows of `x` and their order: shape, dtype, device and a SHA-256 of a
    per-row sum over a strided sample of each row (O(N·64), not O(N·D))."""
    rows = x.reshape(len(x), -1)
    step = max(1, rows.shape[1] // 64)
    digest = hashlib.sha256(rows[:, ::step].double().sum(1).cpu().numpy().tobytes()).hexdigest()
    return tuple(x.shape), str(x.dtype), str(x.device), digest


def reference_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`predict_logits(model, x)`, computed once per (reference model, data) and process.

    A reference model's logits over D_update (a teacher's logits) are the same in every
    trial that loads that model, so for a model handed out by `ReferenceBuilder` (M1, φ_new)
    they are kept in its store and shared by the later trials of a sweep worker. Any other
    model, or a reference model whose weights were written to since, is simply evaluated.
    The result is read-only (an inference tensor)."""
    entry = _REFERENCES.get(model)
    if entry is None or entry[2] != _weights_version(model):
        return predict_logits(model, x)
    store, key, _ = entry
    slot = (key, _data_key(x))
    if slot not in store.logits:
        store.logits[slot] = predict_logits(model, x)
    return store.logits[slot]


def reference_derived(name: str, models: tuple[nn.Module, ...], data: tuple[torch.Tensor, ...],
                      build: Callable[[], Any]) -> tuple[Any, str]:
    """`build()`, computed once per (name, reference models, data) and process.

    For results that depend only on reference models handed out by one `ReferenceBuilder`
    store and on data tensors (not on a trial's hyperparameters), like `reference_logits`.
    Returns (value, status): "hit" (reused), "miss" (built and kept) or "off" (built, not
    kept: a model is not such a reference, is from another store, or its weights were
    written to since). The caller must not modify the value."""
    entries = [_REFERENCES.get(m) for m in models]
    if any(e is None or e[2] != _weights_version(m) for e, m in zip(entries, models)) \
            or any(e[0] is not entries[0][0] for e in entries):
        return build(), "off"
    store = entries[0][0]
    slot = (name, *(e[1] for e in entries), *(_data_key(x) for x in data))
    if slot in store.derived:
        return store.derived[slot], "hit"
    store.derived[slot] = value = build()
    return value, "miss"
