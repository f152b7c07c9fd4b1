"""Packed training: K configurations of one (model, data, batch size, seed, epochs) in one step.

`fit_pack` trains K models side by side as if each ran `train.fit` alone with the same seed:
the members share the data, the batch order (drawn by `train.epoch_batches`, as `fit` draws
it), the batch size, the epochs and the augmentation, and each has its own loss
(`loss_fns[k](logits[k], batch)`: the method losses are reused unchanged) and its own
optimiser settings (lr, momentum, weight_decay, schedule, grad_clip). The optimiser type
must be the same for all members (`SHARED_FIELDS`).

The members' parameters and buffers are stacked along a new leading dimension
(`torch.func.stack_module_state`); one forward over the whole pack gives logits [K, B, C],
and one backward gives every member's gradients (the members' losses are summed; no member's
gradient depends on another's). The optimiser update runs on the stacked tensors with
per-member hyperparameter vectors and follows torch.optim exactly: SGD (momentum with
first-step buffer = gradient, coupled weight decay), Adam/AdamW (whichever
`train.make_optimizer` builds for `optimizer: adam`), the schedule `train.make_scheduler`
builds (its learning rates are read off a real scheduler), `clip_grad_norm_` per member
(its own global norm) and, on CUDA with `amp`, autocast with GradScaler's dynamic loss
scaling per member (a member's inf gradients skip only its own step).

Two engines compute the packed forward:

- "grouped": the model's layers run as packed ops: a member's channels sit side by side in
  one tensor [B, K·C, H, W] (convolutions become one grouped convolution, BatchNorm2d one
  BatchNorm over K·C channels whose running statistics are the stacked buffers, linear
  layers a batched matmul [K, B, F]). It covers `FlipNet`s and `nn.Sequential`s of Conv2d,
  BatchNorm2d, Linear, Dropout, Flatten, pooling and elementwise activations (cnn8, small).
- "vmap": `functional_call` under `torch.func.vmap` (randomness "same", so dropout draws
  the masks a solo run draws), for any other model. BatchNorm's in-place running-statistic
  updates land in the stacked buffers, which vmap batches like the parameters.

"auto" (the default) picks "grouped" when the model allows it: it is the faster of the two
(bench/packing.py measures both). Both keep results equal to solo training within float
rounding (the tests check weights to 1e-5 and identical predictions).

A member whose epoch loss is NaN/inf leaves the pack as `diverged` at the end of that
epoch (where `fit` would raise `DivergedError`; as in `fit`, under AMP the epoch loss
leaves out the member's steps the scaler skipped); `on_epoch(epoch, losses)` may return
members to stop, which leave with their state at that epoch. The pack then shrinks: the
remaining members' tensors are re-stacked, so they run at the speed of a smaller pack.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from .errors import DivergedError, UsageError
from .models import FlipNet
from .train import (FitResult, LossFn, TrainRecipe, epoch_batches, make_optimizer, make_scheduler,
                    seed_everything)

# Recipe fields every member of a pack must share; the others (lr, momentum, weight_decay,
# schedule, grad_clip) may differ per member.
SHARED_FIELDS = ("epochs", "batch_size", "optimizer", "augment", "amp")

ENGINES = ("auto", "grouped", "vmap")

OnEpoch = Callable[[int, dict[int, float]], "set[int] | None"]


def pack_key(recipe: TrainRecipe) -> tuple:
    """What must be equal for two recipes to train in one pack (besides model, data, seed)."""
    return tuple(getattr(recipe, f) for f in SHARED_FIELDS)


@dataclass
class PackMemberResult:
    """One member's outcome. Its trained weights are in the `nn.Module` passed in.

    `status` is "finished" (all epochs), "stopped" (by `on_epoch`, after `epochs` epochs)
    or "diverged" (its loss became NaN/inf in epoch `epochs`; `error` is the message `fit`
    would have raised). `seconds` is the pack's wall time until this member left it.
    """

    status: str
    epochs: int
    epoch_losses: list[float] = field(default_factory=list)
    history: list[dict[str, torch.Tensor]] = field(default_factory=list)  # last k epochs' weights
    seconds: float = 0.0
    error: str = ""

    @property
    def diverged(self) -> bool:
        return self.status == "diverged"

    def fit_result(self) -> FitResult:
        """What `train.fit` would have returned; raises `DivergedError` as it would have."""
        if self.diverged:
            raise DivergedError(self.error)
        return FitResult(list(self.epoch_losses), list(self.history), self.seconds)


# ---------------------------------------------------------------------------------------
# Optimiser settings, read off the optimiser and scheduler `train` itself builds.


@dataclass
class _OptSettings:
    kind: str  # "sgd" | "adam" (coupled weight decay) | "adamw" (decoupled)
    lrs: list[float]  # the learning rate of every step
    weight_decay: float
    momentum: float
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8


def _opt_settings(recipe: TrainRecipe, steps_per_epoch: int) -> _OptSettings:
    probe = nn.Linear(1, 1)
    opt = make_optimizer(probe, recipe)
    g = opt.param_groups[0]
    if isinstance(opt, torch.optim.SGD):
        if g.get("nesterov") or g.get("dampening") or g.get("maximize"):
            raise UsageError("packed training supports plain SGD (no nesterov, dampening, maximize)")
        kind, extra = "sgd", {}
    elif isinstance(opt, torch.optim.Adam):  # AdamW is a subclass
        if g.get("amsgrad") or g.get("maximize"):
            raise UsageError("packed training supports Adam/AdamW without amsgrad or maximize")
        decoupled = g.get("decoupled_weight_decay", isinstance(opt, torch.optim.AdamW))
        kind = "adamw" if decoupled else "adam"
        extra = {"betas": tuple(float(b) for b in g["betas"]), "eps": float(g["eps"])}
    else:
        raise UsageError(f"packed training does not support the optimiser {type(opt).__name__}")
    sched = make_scheduler(opt, recipe, steps_per_epoch)
    lrs = []
    for _ in range(recipe.epochs * steps_per_epoch):
        lrs.append(float(g["lr"]))
        if sched is not None:
            opt.step()  # the probe has no gradient: nothing changes, but the scheduler may step
            sched.step()
    return _OptSettings(kind, lrs, float(g["weight_decay"]), float(g.get("momentum", 0.0)), **extra)


# ---------------------------------------------------------------------------------------
# Engines: the packed forward pass over stacked parameters and buffers.


class _Unsupported(Exception):
    pass


_ELEMENTWISE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid,
                nn.Hardtanh, nn.Identity)
_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def _layers(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """The model as a flat list of (name prefix, leaf module), if it is a plain chain."""
    if type(model) is FlipNet:
        return _layers(model.features, prefix + "features.") + _layers(model.head, prefix + "head.")
    if type(model) is nn.Sequential:
        out = []
        for name, child in model.named_children():
            out += _layers(child, f"{prefix}{name}.")
        return out
    if prefix and next(model.children(), None) is None:
        return [(prefix, model)]
    raise _Unsupported(f"{type(model).__name__} is not a FlipNet/Sequential chain of known layers")


class _GroupedEngine:
    """Packed layers over stacked tensors. Layouts of the running activation h:
    "s4" [B, C, H, W] and "s2" [B, F] are the same for every member (before the first layer
    with weights); "p4" [B, K·C, H, W] holds member k's channels at k·C..(k+1)·C; "p2" is
    [K, B, F]."""

    name = "grouped"

    def __init__(self, model: nn.Module):
        self.plan = _layers(model)
        layout = "s4"
        for prefix, m in self.plan:
            layout = self._check(m, layout)
        if layout != "p2":
            raise _Unsupported("the model does not end in a linear layer")

    @staticmethod
    def _check(m: nn.Module, layout: str) -> str:
        four = layout in ("s4", "p4")
        if isinstance(m, nn.Conv2d) and type(m) is nn.Conv2d:
            if not four or m.padding_mode != "zeros":
                raise _Unsupported("Conv2d needs a 4-d input and zero padding")
            return "p4"
        if type(m) is nn.BatchNorm2d:
            if not four or not m.track_running_stats or m.running_mean is None:
                raise _Unsupported("BatchNorm2d needs a 4-d input and running statistics")
            return "p4"
        if type(m) is nn.Linear:
            if layout not in ("s2", "p2"):
                raise _Unsupported("Linear needs a flat input")
            return "p2"
        if type(m) is nn.Flatten:
            if not four or m.start_dim != 1 or m.end_dim != -1:
                raise _Unsupported("only Flatten(1, -1) of a 4-d input")
            return "s2" if layout == "s4" else "p2"
        if type(m) is nn.Dropout:
            return layout
        if isinstance(m, _POOLS) and type(m) in _POOLS:
            if not four or getattr(m, "return_indices", False):
                raise _Unsupported("pooling needs a 4-d input and no indices")
            return layout
        if type(m) in _ELEMENTWISE:
            return layout
        raise _Unsupported(f"layer {type(m).__name__} has no packed form")

    def forward(self, t: dict[str, torch.Tensor], x: torch.Tensor, k: int) -> torch.Tensor:
        h, layout = x, "s4"
        for prefix, m in self.plan:
            if type(m) is nn.Conv2d:
                w, b = t[prefix + "weight"], t.get(prefix + "bias")
                wf = w.reshape(k * w.shape[1], *w.shape[2:])
                bf = None if b is None else b.reshape(-1)
                if layout == "s4" and m.groups == 1:
                    h = F.conv2d(h, wf, bf, m.stride, m.padding, m.dilation, 1)
                else:
                    if layout == "s4":
                        h = h.repeat(1, k, 1, 1)
                    h = F.conv2d(h, wf, bf, m.stride, m.padding, m.dilation, k * m.groups)
                layout = "p4"
            elif type(m) is nn.BatchNorm2d:
                if layout == "s4":
                    h = h.repeat(1, k, 1, 1)
                layout = "p4"
                nbt = t.get(prefix + "num_batches_tracked")
                factor = 0.0 if m.momentum is None else m.momentum
                if nbt is not None:
                    nbt.add_(1)
                    if m.momentum is None:  # a cumulative average; every member has the same count
                        factor = 1.0 / float(nbt[0])
                w, b = t.get(prefix + "weight"), t.get(prefix + "bias")
                h = F.batch_norm(h, t[prefix + "running_mean"].view(-1), t[prefix + "running_var"].view(-1),
                                 None if w is None else w.reshape(-1), None if b is None else b.reshape(-1),
                                 True, factor, m.eps)
            elif type(m) is nn.Linear:
                w, b = t[prefix + "weight"], t.get(prefix + "bias")
                if layout == "s2":  # one matmul for every member: [B, K·O] -> [K, B, O]
                    out = F.linear(h, w.reshape(-1, w.shape[-1]), None if b is None else b.reshape(-1))
                    h = out.view(h.shape[0], k, -1).transpose(0, 1)
                else:
                    h = (torch.bmm(h, w.transpose(1, 2)) if b is None
                         else torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2)))
                layout = "p2"
            elif type(m) is nn.Flatten:
                if layout == "s4":
                    h, layout = h.flatten(1), "s2"
                else:
                    h, layout = h.reshape(h.shape[0], k, -1).transpose(0, 1), "p2"
            elif type(m) is nn.Dropout:
                h = self._dropout(h, layout, m, k)
            elif type(m) is nn.AdaptiveAvgPool2d and (kernel := _even_pool(h, m.output_size)):
                # the same windows summed in the same order (bit-identical), 2-3x faster on CPU
                h = F.avg_pool2d(h, kernel)
            else:  # pooling and elementwise layers act per channel: any layout
                h = m(h)
        return h

    @staticmethod
    def _dropout(h: torch.Tensor, layout: str, m: nn.Dropout, k: int) -> torch.Tensor:
        """Dropout with the mask a solo run draws (one mask of the solo shape, shared by all
        members: each solo run draws the same one from the same seed)."""
        if layout in ("s4", "s2"):
            return F.dropout(h, m.p, True)
        if layout == "p2":
            noise = F.dropout(torch.ones(h.shape[1:], dtype=h.dtype, device=h.device), m.p, True)
            return h * noise
        b, kc, hh, ww = h.shape
        noise = F.dropout(torch.ones(b, kc // k, hh, ww, dtype=h.dtype, device=h.device), m.p, True)
        return (h.view(b, k, kc // k, hh, ww) * noise.unsqueeze(1)).view(b, kc, hh, ww)


_EVEN_POOL: dict[tuple, tuple[int, int] | None] = {}


def _even_pool(h: torch.Tensor, output_size) -> tuple[int, int] | None:
    """The avg_pool2d kernel that gives bit-for-bit adaptive_avg_pool2d(h, output_size), or
    None. Candidates: the output divides the input evenly (kernel = stride, no overlap), the
    window area is a power of two (dividing by it is exact either way) and the output is not
    global (that path reduces differently). Each candidate is confirmed once per shape on
    random data, forward and backward, before it is used."""
    size = tuple(output_size) if isinstance(output_size, (tuple, list)) else (output_size, output_size)
    hw = tuple(h.shape[-2:])
    out = tuple(hw[i] if size[i] is None else size[i] for i in range(2))
    key = (tuple(h.shape), out, h.dtype, h.device.type)
    if key not in _EVEN_POOL:
        kernel = None
        if all(o > 0 and n % o == 0 for n, o in zip(hw, out)) and out != (1, 1):
            cand = (hw[0] // out[0], hw[1] // out[1])
            area = cand[0] * cand[1]
            if area & (area - 1) == 0:
                gen = torch.Generator(h.device).manual_seed(0)  # not the global RNG: dropout draws from it
                with torch.enable_grad():
                    probe = torch.randn(h.shape, dtype=h.dtype, device=h.device, generator=gen).requires_grad_()
                    a, b = F.adaptive_avg_pool2d(probe, out), F.avg_pool2d(probe, cand)
                    g = torch.randn(a.shape, dtype=a.dtype, device=a.device, generator=gen)
                    same = torch.equal(a, b) and torch.equal(torch.autograd.grad(a, probe, g)[0],
                                                             torch.autograd.grad(b, probe, g)[0])
                kernel = cand if same else None
        _EVEN_POOL[key] = kernel
    return _EVEN_POOL[key]


class _VmapEngine:
    """`functional_call` of a meta-device copy of the model under `vmap` over the members."""

    name = "vmap"

    def __init__(self, model: nn.Module, param_names: list[str], buffer_names: list[str]):
        self.base = copy.deepcopy(model).to("meta").train()
        self.param_names, self.buffer_names = param_names, buffer_names

        def call(params, buffers, x):
            return functional_call(self.base, (params, buffers), (x,))

        self._fn = vmap(call, in_dims=(0, 0, None), randomness="same")

    def forward(self, t: dict[str, torch.Tensor], x: torch.Tensor, k: int) -> torch.Tensor:
        return self._fn({n: t[n] for n in self.param_names}, {n: t[n] for n in self.buffer_names}, x)


# ---------------------------------------------------------------------------------------
# The packed optimiser, loss scaler and gradient clipping.


def _col(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-member vector [K] shaped to broadcast against a stacked tensor [K, ...]."""
    return v.view(-1, *([1] * (like.dim() - 1)))


class _PackOptimizer:
    """torch.optim.SGD / Adam / AdamW on stacked tensors, one hyperparameter set per member."""

    def __init__(self, settings: list[_OptSettings], names: list[str], device: torch.device):
        kinds = {s.kind for s in settings}
        if len(kinds) != 1:
            raise UsageError(f"a pack needs one optimiser type, got {sorted(kinds)}")
        self.kind = kinds.pop()
        if self.kind != "sgd" and len({(s.betas, s.eps) for s in settings}) != 1:
            raise UsageError("a pack's Adam members must share betas and eps")
        self.names = names
        f64 = dict(dtype=torch.float64, device=device)
        self.v = {  # per-member vectors, shrunk with the pack
            "lr": torch.tensor([s.lrs for s in settings], **f64),  # [K, steps]
            "wd": torch.tensor([s.weight_decay for s in settings], **f64),
            "momentum": torch.tensor([s.momentum for s in settings], **f64),
            "step": torch.zeros(len(settings), **f64),  # Adam's per-member step count
        }
        self.any_wd = any(s.weight_decay for s in settings)
        self.any_momentum = self.kind == "sgd" and any(s.momentum for s in settings)
        self.betas, self.eps = settings[0].betas, settings[0].eps
        self.state: dict[str, dict[str, torch.Tensor]] = {n: {} for n in names}
        self.buf_ready: torch.Tensor | None = None  # SGD: which members have a momentum buffer
        self.all_ready = False  # ... all of them (known on the host: no sync per step)

    def shrink(self, rows: torch.Tensor) -> None:
        self.v = {k: t.index_select(0, rows) for k, t in self.v.items()}
        self.state = {n: {k: t.index_select(0, rows) for k, t in st.items()} for n, st in self.state.items()}
        if self.buf_ready is not None:
            self.buf_ready = self.buf_ready.index_select(0, rows)

    def tensors(self) -> list[torch.Tensor]:
        return [t for st in self.state.values() for t in st.values()]

    @torch.no_grad()
    def step(self, params: list[torch.Tensor], grads: list[torch.Tensor | None], t: int,
             applied: torch.Tensor | None = None) -> None:
        """One update with the learning rates of step `t`. `applied` (bool [K], AMP only):
        members whose step is taken; the others keep their state (GradScaler skipped it)."""
        lr = self.v["lr"][:, t]
        if self.kind == "sgd":
            self._sgd(params, grads, lr, applied)
        else:
            self._adam(params, grads, lr, applied)

    def _sgd(self, params, grads, lr, applied):
        wd = self.v["wd"].float()
        mom = self.v["momentum"].float()
        neg_lr = (-lr).float()
        first = self.buf_ready is None
        for name, p, g in zip(self.names, params, grads):
            if g is None:
                continue
            d = torch.addcmul(g, p, _col(wd, p)) if self.any_wd else g
            if self.any_momentum:
                st = self.state[name]
                if first:
                    st["buf"] = d.clone()
                elif self.all_ready:
                    st["buf"].mul_(_col(mom, p)).add_(d)
                else:  # a member whose every step so far was skipped starts its buffer now
                    st["buf"] = torch.where(_col(self.buf_ready, p), st["buf"] * _col(mom, p) + d, d)
                d = st["buf"]
            p.addcmul_(d, _col(neg_lr, p))
        if self.any_momentum:
            ready = torch.ones_like(self.v["wd"], dtype=torch.bool) if applied is None else applied
            self.buf_ready = ready if first else self.buf_ready | ready
            # a step without skips readies every member; after a skip (AMP: already synced) look
            self.all_ready = applied is None or bool(self.buf_ready.all())

    def _adam(self, params, grads, lr, applied):
        beta1, beta2 = self.betas
        step = self.v["step"]
        step += 1 if applied is None else applied.to(step.dtype)
        self.v["step"] = step
        step_size = lr / (1 - beta1 ** step)
        neg_step = (-step_size).float()
        bc2_sqrt = ((1 - beta2 ** step) ** 0.5).float()
        wd = self.v["wd"]
        decay = (1 - lr * wd).float()
        wd32 = wd.float()
        for name, p, g in zip(self.names, params, grads):
            if g is None:
                continue
            st = self.state[name]
            if not st:
                st["exp_avg"] = torch.zeros_like(p)
                st["exp_avg_sq"] = torch.zeros_like(p)
            if self.any_wd:
                if self.kind == "adamw":
                    p.mul_(_col(decay, p))
                else:
                    g = torch.addcmul(g, p, _col(wd32, p))
            st["exp_avg"].lerp_(g, 1 - beta1)
            st["exp_avg_sq"].mul_(beta2).addcmul_(g, g, value=1 - beta2)
            denom = (st["exp_avg_sq"].sqrt() / _col(bc2_sqrt, p)).add_(self.eps)
            p.addcmul_(st["exp_avg"] / denom, _col(neg_step, p))


@torch.no_grad()
def _clip_grad_norms_(grads: list[torch.Tensor | None], max_norms: torch.Tensor) -> None:
    """`nn.utils.clip_grad_norm_` per member (each its own global 2-norm); 0 = no clipping."""
    present = [g for g in grads if g is not None]
    if not present:
        return
    norms = torch.stack([torch.linalg.vector_norm(g.flatten(1), 2, dim=1) for g in present])
    total = torch.linalg.vector_norm(norms, 2, dim=0)
    coef = (max_norms / (total + 1e-6)).clamp(max=1.0)
    coef = torch.where(max_norms > 0, coef, torch.ones_like(coef))
    for g in present:
        g.mul_(_col(coef, g))


class _PackScaler:
    """torch.amp.GradScaler's dynamic loss scaling with one scale per member (its defaults:
    init 2^16, growth ×2 every 2000 clean steps, backoff ×0.5 on inf/NaN gradients)."""

    def __init__(self, k: int, device: torch.device, init_scale: float = 2.0 ** 16,
                 growth_factor: float = 2.0, backoff_factor: float = 0.5, growth_interval: int = 2000):
        self.v = {"scale": torch.full((k,), init_scale, dtype=torch.float32, device=device),
                  "tracker": torch.zeros(k, dtype=torch.int32, device=device)}
        self.growth_factor, self.backoff_factor, self.growth_interval = growth_factor, backoff_factor, growth_interval

    def shrink(self, rows: torch.Tensor) -> None:
        self.v = {k: t.index_select(0, rows) for k, t in self.v.items()}

    def scale(self, losses: torch.Tensor) -> torch.Tensor:
        return losses * self.v["scale"]

    @torch.no_grad()
    def unscale_(self, grads: list[torch.Tensor | None]) -> torch.Tensor:
        """Unscale in place; returns found_inf per member (bool [K])."""
        inv = self.v["scale"].double().reciprocal().float()
        found = torch.zeros_like(inv, dtype=torch.bool)
        for g in grads:
            if g is not None:
                found |= ~torch.isfinite(g).flatten(1).all(dim=1)
                g.mul_(_col(inv, g))
        return found

    def update(self, found: torch.Tensor) -> None:
        scale, tracker = self.v["scale"], self.v["tracker"]
        successful = tracker + 1
        grow = successful == self.growth_interval
        grown = scale * self.growth_factor
        new_scale = torch.where(found, scale * self.backoff_factor,
                                torch.where(grow & torch.isfinite(grown), grown, scale))
        new_tracker = torch.where(found | grow, torch.zeros_like(tracker), successful)
        self.v = {"scale": new_scale, "tracker": new_tracker}


# ---------------------------------------------------------------------------------------
# The pack.


def _check_pack(models, recipes, loss_fns, x) -> None:
    if not models:
        raise UsageError("a pack needs at least one member")
    if not len(models) == len(recipes) == len(loss_fns):
        raise UsageError(f"a pack needs one recipe and one loss per model: got {len(models)} models, "
                         f"{len(recipes)} recipes, {len(loss_fns)} losses")
    for f in SHARED_FIELDS:
        values = {getattr(r, f) for r in recipes}
        if len(values) > 1:
            raise UsageError(f"the members of a pack must share {f!r}; got {sorted(map(str, values))}")
    ref = models[0]
    shape = [(n, t.shape, t.dtype, t.requires_grad) for n, t in ref.named_parameters()]
    bshape = [(n, t.shape, t.dtype) for n, t in ref.named_buffers()]
    for m in models[1:]:
        m_shape = [(n, t.shape, t.dtype, t.requires_grad) for n, t in m.named_parameters()]
        m_bshape = [(n, t.shape, t.dtype) for n, t in m.named_buffers()]
        if type(m) is not type(ref) or shape != m_shape or bshape != m_bshape:
            raise UsageError("the members of a pack must be the same architecture")
    if len({id(m) for m in models}) != len(models):
        raise UsageError("a model appears twice in the pack")
    for m in models:
        for t in list(m.parameters()) + list(m.buffers()):
            if t.device != x.device:
                raise UsageError(f"a member's weights are on {t.device}, the data on {x.device}")


def _make_engine(engine: str, model: nn.Module, param_names, buffer_names):
    if engine not in ENGINES:
        raise UsageError(f"unknown pack engine {engine!r}; choose one of {list(ENGINES)}")
    if engine in ("auto", "grouped"):
        try:
            return _GroupedEngine(model)
        except _Unsupported as e:
            if engine == "grouped":
                raise UsageError(f"the grouped pack engine cannot run this model: {e}") from None
    return _VmapEngine(model, param_names, buffer_names)


def fit_pack(models: Sequence[nn.Module], x: torch.Tensor, y: torch.Tensor, recipes: Sequence[TrainRecipe], *,
             seed: int, loss_fns: Sequence[LossFn], keep_history: int = 0, on_epoch: OnEpoch | None = None,
             engine: str = "auto", _force_loss_scaling: bool = False) -> list[PackMemberResult]:
    """Train every `models[k]` in place with `recipes[k]` and `loss_fns[k]`, all in one pack,
    each as `train.fit(models[k], x, y, recipes[k], seed=seed, loss_fn=loss_fns[k],
    keep_history=keep_history)` would. Returns one `PackMemberResult` per member, in order.

    The recipes must agree on `SHARED_FIELDS`; the models must be one architecture on x's
    device. `on_epoch(epoch, {member: epoch loss})` (epoch counted from 1, over the members
    still in the pack, whose modules hold that epoch's weights during the call) may return
    members to stop now. `engine`: "auto", "grouped" or "vmap"
    (module doc). `_force_loss_scaling` runs the AMP loss scaler without autocast (tests).

    Why it is one long function: the epoch loop, the step closure and the stop handling all
    read and write the same stacked member tensors, packed optimiser, loss scaler and
    stop flags, in an order that `tests/test_pack.py` pins against `train.fit` step for
    step. Splitting it means giving that state a class of its own (the `pack/` package of
    issue 24), which is left for a change that can re-run the GPU check.
    """
    t0 = time.perf_counter()
    models, recipes, loss_fns = list(models), list(recipes), list(loss_fns)
    _check_pack(models, recipes, loss_fns, x)
    if keep_history < 0:
        raise UsageError("keep_history must be >= 0")
    k_all = len(models)
    recipe = recipes[0]
    device = x.device
    steps_per_epoch = math.ceil(len(x) / recipe.batch_size)
    opt = _PackOptimizer([_opt_settings(r, steps_per_epoch) for r in recipes],
                         [n for n, p in models[0].named_parameters() if p.requires_grad], device)
    param_names = [n for n, _ in models[0].named_parameters()]
    buffer_names = [n for n, _ in models[0].named_buffers()]
    sd_names = list(models[0].state_dict().keys())
    if not set(sd_names) <= set(param_names) | set(buffer_names):
        raise UsageError("packed training needs a model whose state_dict is its parameters and buffers")
    eng = _make_engine(engine, models[0], param_names, buffer_names)

    gen = seed_everything(seed)
    for m in models:
        m.train()
    params, buffers = stack_module_state(models)
    tensors: dict[str, torch.Tensor] = {**params, **buffers}
    for n in param_names:
        if n not in opt.names:
            tensors[n] = tensors[n].detach()
    clip = torch.tensor([r.grad_clip for r in recipes], dtype=torch.float32, device=device)
    any_clip = any(r.grad_clip for r in recipes)
    use_amp = recipe.amp and device.type == "cuda"
    scaler = _PackScaler(k_all, device) if (use_amp or _force_loss_scaling) else None

    active = list(range(k_all))  # original member index at each pack position
    results: dict[int, PackMemberResult] = {}
    losses_so_far: dict[int, list[float]] = {i: [] for i in range(k_all)}
    history: dict[int, list[dict[str, torch.Tensor]]] = {i: [] for i in range(k_all)}

    def member_state(pos: int) -> dict[str, torch.Tensor]:
        return {n: tensors[n][pos] for n in param_names + buffer_names}

    def write_back(pos: int) -> None:
        """Copy the member at `pos` of the stacked tensors into its own module."""
        model, state = models[active[pos]], member_state(pos)
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(state[n])
            for n, b in model.named_buffers():
                b.copy_(state[n])

    def leave(pos: int, status: str, epochs: int, error: str = "") -> None:
        i = active[pos]
        write_back(pos)
        models[i].eval()
        results[i] = PackMemberResult(status, epochs, losses_so_far[i], history[i],
                                      time.perf_counter() - t0, error)

    step = 0
    for epoch in range(recipe.epochs):
        k = len(active)
        totals = torch.zeros(k, device=device)
        counted = torch.zeros(k, device=device)  # samples of each member's steps taken
        trainable = [tensors[n] for n in opt.names]
        member_losses = [loss_fns[i] for i in active]
        for batch in epoch_batches(x, y, recipe, gen):
            with torch.autocast(device.type, enabled=use_amp):
                logits = eng.forward(tensors, batch.x, k)
                losses = torch.stack([fn(logits[j], batch) for j, fn in enumerate(member_losses)])
            target = scaler.scale(losses) if scaler is not None else losses
            grads = list(torch.autograd.grad(target.sum(), trainable, allow_unused=True))
            applied = None
            if scaler is not None:
                found = scaler.unscale_(grads)
                if bool(found.any()):  # GradScaler syncs here too (to decide on the step)
                    applied = ~found
            if any_clip:
                _clip_grad_norms_(grads, clip)
            if applied is None:
                opt.step(trainable, grads, step)
            else:  # GradScaler skips the step of a member with inf/NaN gradients
                with _keep_skipped(trainable, opt, applied):
                    opt.step(trainable, grads, step, applied)
            if scaler is not None:
                scaler.update(found)
            step += 1
            if applied is None:
                totals += losses.detach() * len(batch.idx)
                counted += len(batch.idx)
            else:  # a step the scaler skipped (fp16 overflow) is no divergence: leave it out
                totals += torch.where(applied, losses.detach(), 0.0) * len(batch.idx)
                counted += applied * len(batch.idx)
        epoch_losses = [t / c if c else math.nan for t, c in zip(totals.tolist(), counted.tolist())]
        leaving: list[tuple[int, str, str]] = []
        for pos, i in enumerate(active):
            if not math.isfinite(epoch_losses[pos]):
                leaving.append((pos, "diverged", f"training loss became {epoch_losses[pos]} in epoch {epoch + 1}"))
            else:
                losses_so_far[i].append(epoch_losses[pos])
                if keep_history and epoch >= recipe.epochs - keep_history:
                    history[i].append({n: tensors[n][pos].detach().to("cpu", copy=True) for n in sd_names})
        if on_epoch is not None:
            gone = {active[pos] for pos, _, _ in leaving}
            alive = {i: losses_so_far[i][-1] for i in active if i not in gone}
            for pos, i in enumerate(active):  # on_epoch may evaluate the members: give them this epoch's weights
                if i in alive:
                    write_back(pos)
            stop = on_epoch(epoch + 1, dict(alive)) or set()
            unknown = set(stop) - set(range(k_all))
            if unknown:
                raise UsageError(f"on_epoch asked to stop unknown pack members {sorted(unknown)}")
            # a member stopped after the last epoch has simply finished
            if epoch < recipe.epochs - 1:
                leaving += [(active.index(i), "stopped", "") for i in sorted(set(stop) & set(alive))]
        if epoch == recipe.epochs - 1:
            leaving += [(pos, "finished", "") for pos in range(len(active))
                        if pos not in {p for p, _, _ in leaving}]
        for pos, status, error in leaving:
            leave(pos, status, epoch + 1, error)
        if leaving and epoch < recipe.epochs - 1:
            keep = [pos for pos in range(len(active)) if pos not in {p for p, _, _ in leaving}]
            if not keep:
                break
            rows = torch.tensor(keep, device=device)
            tensors = {n: _take(t, rows, n in opt.names) for n, t in tensors.items()}
            opt.shrink(rows)
            clip = clip.index_select(0, rows)
            if scaler is not None:
                scaler.shrink(rows)
            active = [active[pos] for pos in keep]
    return [results[i] for i in range(k_all)]


@contextlib.contextmanager
def _keep_skipped(params: list[torch.Tensor], opt: _PackOptimizer, applied: torch.Tensor):
    """Around an optimiser step: the members not `applied` keep their weights and optimiser
    state as they were (state the step creates starts from zero for them)."""
    params_before = [p.detach().clone() for p in params]
    state_before = {n: {k: t.clone() for k, t in st.items()} for n, st in opt.state.items()}
    yield
    with torch.no_grad():
        for p, old in zip(params, params_before):
            p.copy_(torch.where(_col(applied, p), p, old))
        for n, st in opt.state.items():
            for key, t in st.items():
                old = state_before[n].get(key)
                t.copy_(torch.where(_col(applied, t), t, torch.zeros_like(t) if old is None else old))


def _take(t: torch.Tensor, rows: torch.Tensor, trainable: bool) -> torch.Tensor:
    out = t.detach().index_select(0, rows)
    return out.requires_grad_() if trainable else out
