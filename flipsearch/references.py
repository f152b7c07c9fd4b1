"""Reference models, trained once and shared: M1 and the `Reference`s methods declare.

M1 is every trial's reference; a method lists any others it needs as `Reference` subclasses
in its `needs` (MPT: `PhiNew`; NeuRecover: its CE update, in `methods/neurecover`), and the
trial hands it exactly those.

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
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, ContextManager

import torch
from torch import nn

from . import numerics
from .errors import UsageError
from .models import build_model
from .storage import Storage
from .train import TrainRecipe, fit

log = logging.getLogger(__name__)


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
        # Values derived from this store's reference models (teacher logits, NeuRecover's
        # preparation), kept for the store's life and keyed by content addresses.
        self.derived = DerivedCache()
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
        try:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - a matching checksum on a file that is not plain weights
            # Someone replaced it together with its checksum (a pickle that is not plain
            # weights, or a file of another format): never loaded, never left in the way of
            # every later trial. It is set aside for inspection and the reference retrained.
            self.corrupt += 1
            self.storage.move(f"{key}.pt", f"{key}.pt.quarantined")
            self.storage.delete(f"{key}.sha256")
            log.warning("reference model %s passed its checksum but is not plain weights (%s); moved it to %s and "
                        "retraining it", key, str(e).splitlines()[0][:200] if str(e) else type(e).__name__,
                        f"{key}.pt.quarantined")
            return None


class DerivedCache:
    """Values computed from reference models and scenario data only (never from a trial's
    hyperparameters), keyed by a tuple of content addresses: a teacher's logits over
    D_update, NeuRecover's localisation inputs. One per reference store, so the trials of a
    sweep worker compute each once. A key of None (or one holding None) is not cached.

    Values are kept on the CPU and handed out on the caller's `device`: a reused Ray actor
    lives for many trials, and CUDA tensors held here would stay allocated on its GPU share
    between and after them (the trial's own copy goes with the trial)."""

    def __init__(self):
        self._values: dict[tuple, Any] = {}

    def get(self, key: tuple | None, build: Callable[[], Any],
            device: torch.device | str | None = None) -> tuple[Any, str]:
        """(value, "hit" | "miss" | "off"), its tensors on `device` (None: where `build` put
        them on a miss, the CPU on a hit); the caller must not modify the value."""
        if key is None or any(k is None for k in key):
            return build(), "off"
        if key in self._values:
            value = self._values[key]
            return (value if device is None else to_device(value, device)), "hit"
        value = build()
        self._values[key] = to_device(value, "cpu")
        return value, "miss"

    def clear(self) -> None:
        self._values.clear()


def to_device(value: Any, device: torch.device | str) -> Any:
    """`value` with every tensor in it (nested in lists, tuples, dicts and dataclasses)
    on `device`; a tensor already there is not copied."""
    import dataclasses

    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(to_device(v, device) for v in value)
    if isinstance(value, tuple):  # a NamedTuple
        return type(value)(*(to_device(v, device) for v in value))
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: to_device(getattr(value, f.name), device)
                                             for f in dataclasses.fields(value) if f.init})
    return value


@dataclass
class ReferenceInputs:
    """What building a reference may use: the scenario's training tensors, M1, and the
    trial's `new_model(init)` factory."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_update: torch.Tensor
    y_update: torch.Tensor
    m1: nn.Module
    new_model: Callable[[str], nn.Module]


class Reference(ABC):
    """A reference model besides M1: a pure function of the scenario, the recipes and
    `spec`, trained once per sweep and shared. Subclasses set `kind` and implement `build`
    (train it; return a payload of tensors and plain values) and `load` (what the method
    receives from a payload)."""

    kind: ClassVar[str]

    @classmethod
    def spec(cls, b: "ReferenceBuilder") -> dict:
        """What besides the scenario identifies this reference (recipes, options)."""
        return {"update_recipe": b.update_recipe.as_dict()}

    @classmethod
    @abstractmethod
    def build(cls, b: "ReferenceBuilder", inputs: ReferenceInputs) -> dict: ...

    @classmethod
    @abstractmethod
    def load(cls, b: "ReferenceBuilder", payload: dict, inputs: ReferenceInputs) -> Any: ...


class PhiNew(Reference):
    """φ_new (MPT): trained from scratch with plain CE on the whole D_update."""

    kind = "phi_new"

    @classmethod
    def build(cls, b, inputs):
        model = b.model(b.num_classes, seed=b.seed + 2)
        fit(model, inputs.x_update, inputs.y_update, b.update_recipe, seed=b.seed + 2)
        return {"state_dict": cpu_state(model)}

    @classmethod
    def load(cls, b, payload, inputs):
        return b.model(b.num_classes, payload["state_dict"]).eval()


@dataclass
class ReferenceBuilder:
    """Builds (or fetches) the reference models of one scenario for one trial."""

    store: ReferenceStore
    spec: dict  # identifies the scenario: dataset, arrangement, old_fraction, model, seed, split fingerprint
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

    def model(self, num_classes: int, state: dict | None = None, seed: int | None = None) -> nn.Module:
        model = build_model(self.model_name, num_classes, self.input_shape, seed=seed)
        if state is not None:
            model.load_state_dict(state)
        return model.to(self.device)

    def key(self, kind: str, extra: dict) -> str:
        """The content address of reference `kind`: the scenario, `extra` (recipes, options)
        and the device's numerics (`numerics.tag`: a model trained on CUDA is not the one the
        CPU trains, so a mixed cluster never hands one device's reference to the other)."""
        return reference_key(kind, {**self.spec, **extra, "device": numerics.tag(self.device)})

    def _fetch(self, kind: str, extra: dict, build: Callable[[], dict]) -> dict:
        t0 = time.perf_counter()
        key = self.key(kind, extra)
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
            model = self.model(self.num_old_classes)
            load_user_state(model, self.old_model_path, f"model {self.model_name!r} with "
                                                        f"{self.num_old_classes} outputs")
            self.status["m1"] = "user"
            self.keys["m1"] = self.key("m1-user", {"sha256": self.old_model_sha})
            return model.eval()

        def build():
            model = self.model(self.num_old_classes, seed=self.seed)
            fit(model, x_train, y_train, self.m1_recipe, seed=self.seed)
            return {"state_dict": cpu_state(model)}

        return self.model(self.num_old_classes, self._fetch("m1", self.m1_key_spec(), build)["state_dict"]).eval()

    def get(self, ref: type[Reference], inputs: ReferenceInputs) -> Any:
        """The loaded reference `ref`, trained here only if no trial did before."""
        payload = self._fetch(ref.kind, ref.spec(self), lambda: ref.build(self, inputs))
        return ref.load(self, payload, inputs)


def read_user_state(path: str) -> dict:
    """A user's state_dict checkpoint read with `weights_only=True`, or a one-line
    `UsageError` (a pickle that is not plain weights is refused, without torch's warning
    printed first)."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable or non-weights file
        raise UsageError(f"cannot load {path!r} as a state_dict (weights_only): {str(e).splitlines()[0]}") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UsageError(f"{path!r} holds a {type(state).__name__}, not a state_dict")
    return state


def load_user_state(model: nn.Module, path: str, what: str) -> nn.Module:
    """Load a user's state_dict checkpoint into `model` (`read_user_state`)."""
    state = read_user_state(path)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as e:
        raise UsageError(f"{path!r} does not fit {what}: {str(e).splitlines()[0]}") from None
    return model


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of `model`'s state dict (safe to keep after the model moves on)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
