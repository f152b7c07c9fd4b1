"""NeuRecover's localisation: which weights of the head may change (package doc, step 2)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import UsageError

BATCH = 1024  # inference batch for collecting head inputs
EVAL_ELEMENTS = 1 << 24  # bound on particles × rows × width per batched evaluation


# --------------------------------------------------------------------------- scope


@dataclass
class Scope:
    """The part of the model NeuRecover may edit.

    `layers` run in order map the head input to the logits; `names[i]` is the full
    parameter name of `layers[i].weight` in the model when `layers[i]` is an `nn.Linear`
    (else None). `head_inputs(x)` returns (head input, logits) for a batch.
    """

    kind: str  # "head" (a FlipNet) or "last_linear" (any other model)
    layers: list[nn.Module]
    names: list[str | None]
    head_inputs: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

    @property
    def linear_positions(self) -> list[int]:
        return [i for i, n in enumerate(self.names) if n is not None]


def _flatten(seq: nn.Sequential, prefix: str) -> list[tuple[str, nn.Module]]:
    out: list[tuple[str, nn.Module]] = []
    for name, m in seq.named_children():
        full = f"{prefix}.{name}"
        out += _flatten(m, full) if isinstance(m, nn.Sequential) else [(full, m)]
    return out


def find_scope(model: nn.Module, probe: torch.Tensor) -> Scope:
    """A `FlipNet`'s head, or else the last `nn.Linear` run in `model`'s forward pass (found
    with hooks on `probe`, a small input batch; it must produce the logits itself)."""
    head, features = getattr(model, "head", None), getattr(model, "features", None)
    items = _flatten(head, "head") if isinstance(head, nn.Sequential) else []
    if isinstance(features, nn.Module) and any(isinstance(m, nn.Linear) for _, m in items):

        def head_inputs(x):
            h = model.features(x)
            return h, model.head(h)

        return Scope("head", [m for _, m in items],
                     [f"{n}.weight" if isinstance(m, nn.Linear) else None for n, m in items], head_inputs)

    calls: list[tuple[str, nn.Module, torch.Tensor, torch.Tensor]] = []
    handles = [m.register_forward_hook(lambda mod, inp, out, name=name: calls.append((name, mod, inp[0], out.clone())))
               for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    try:
        with torch.no_grad():
            logits = model(probe)
    finally:
        for h in handles:
            h.remove()
    fix = "build it as flipsearch.models.FlipNet(features, head) or end its forward pass with an nn.Linear"
    if not calls:
        raise UsageError(f"neurecover: the model has no nn.Linear layer to repair; {fix}")
    name, layer, inp, out = calls[-1]
    if inp.dim() != 2 or out.shape != logits.shape or not torch.equal(out, logits):
        raise UsageError(f"neurecover: the model's last nn.Linear ({name}) does not output its logits; {fix}")

    def last_inputs(x):
        seen: list[torch.Tensor] = []
        hook = layer.register_forward_hook(lambda mod, i, o: seen.append(i[0]))
        try:
            z = model(x)
        finally:
            hook.remove()
        return seen[-1], z

    return Scope("last_linear", [layer], [f"{name}.weight"], last_inputs)


@torch.no_grad()
def _collect(scope: Scope, x: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Head inputs and logits of `x[idx]`, batched. (`no_grad`, not `inference_mode`: the
    head inputs are fed to autograd during localisation.)"""
    hs, zs = [], []
    for s in range(0, len(idx), BATCH):
        h, z = scope.head_inputs(x[idx[s:s + BATCH]])
        hs.append(h.float())
        zs.append(z.float())
    if not hs:
        return x.new_zeros((0,)), x.new_zeros((0,))
    return torch.cat(hs), torch.cat(zs)


@torch.no_grad()
def history_split(scope: Scope, prev: nn.Module, x: torch.Tensor, y: torch.Tensor,
                  idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Head inputs (under M_N) of deg = {correct under `prev` (M_{N−1}), wrong under M_N}
    and imp = {wrong under M_{N−1}, correct under M_N}, over `x[idx]`."""
    deg, imp = [], []
    for s in range(0, len(idx), BATCH):
        xb, yb = x[idx[s:s + BATCH]], y[idx[s:s + BATCH]]
        h, z = scope.head_inputs(xb)
        now, before = z.argmax(1) == yb, prev(xb).argmax(1) == yb
        deg.append(h[before & ~now].float())
        imp.append(h[~before & now].float())
    if not deg:
        return x.new_zeros((0,)), x.new_zeros((0,))
    return torch.cat(deg), torch.cat(imp)


# --------------------------------------------------------------------------- localisation


@dataclass
class Target:
    """The chosen entries (rows[k], cols[k]) of one Linear weight matrix."""

    pos: int  # position of the layer in `Scope.layers`
    name: str
    rows: torch.Tensor
    cols: torch.Tensor


@dataclass
class Localisation:
    """The weights NeuRecover may change: the target layers, the budget k_l and the number chosen per layer."""
    targets: list[Target] = field(default_factory=list)  # layers with >= 1 chosen weight
    budget: dict[str, int] = field(default_factory=dict)  # k_l per layer
    counts: dict[str, int] = field(default_factory=dict)  # chosen per layer

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def impacts(layers: list[nn.Module], positions: list[int], x: torch.Tensor) -> tuple[dict, dict] | None:
    """Gradient impact |∂(Σ logits)/∂W| and forward impact |W| · mean|input| of every Linear
    at `positions`, over the head inputs `x` (None when `x` is empty)."""
    if len(x) == 0:
        return None
    leaves = {p: layers[p].weight.detach().clone().requires_grad_(True) for p in positions}
    fwd = {}
    h = x.detach().clone()  # the head may start with an in-place op
    with torch.enable_grad():
        for p, m in enumerate(layers):
            if p in leaves:
                fwd[p] = leaves[p].detach().abs() * h.detach().abs().mean(0)[None, :]
                h = F.linear(h, leaves[p], None if m.bias is None else m.bias.detach())
            else:
                h = m(h)
        grads = torch.autograd.grad(h.sum(), [leaves[p] for p in positions], allow_unused=True)
    grad = {p: (torch.zeros_like(leaves[p]) if g is None else g.abs()) for p, g in zip(positions, grads)}
    return grad, fwd


def _order(scores: torch.Tensor) -> torch.Tensor:
    """Flat positions of `scores` from largest to smallest (ties by position, deterministically):
    the top k are its first k entries, for every k."""
    return torch.argsort(scores.flatten(), descending=True, stable=True)


def _first(order: torch.Tensor, k: int, shape: torch.Size) -> torch.Tensor:
    """Mask of `shape` of the first k flat positions of `order`."""
    mask = torch.zeros(len(order), dtype=torch.bool, device=order.device)
    mask[order[:k]] = True
    return mask.view(shape)


def _shares(values: dict[int, float]) -> dict[int, float]:
    total = sum(values.values())
    return {p: (v / total if total > 0 else 0.0) for p, v in values.items()}


@dataclass
class LayerScores:
    """What the localisation knows of one Linear before its budget: its suspiciousness
    susp_l and, when susp_l > 0, the descending orders of FI_deg, G_deg, |Δ| (and of FI_imp,
    G_imp when there are imp inputs). Independent of `reduction_rate`."""

    pos: int
    name: str
    shape: torch.Size  # of the weight matrix
    susp: float
    orders: dict[str, torch.Tensor] = field(default_factory=dict)


def score(layers: list[nn.Module], names: list[str | None], x_deg: torch.Tensor, x_imp: torch.Tensor,
          deltas: dict[int, torch.Tensor]) -> list[LayerScores]:
    """Everything of `localise` before the budgets: impacts, shares, susp_l and top-k orders."""
    positions = [p for p, n in enumerate(names) if n is not None]
    deg = impacts(layers, positions, x_deg)
    imp = impacts(layers, positions, x_imp)
    d_share = _shares({p: float(deltas[p].abs().mean()) for p in positions})
    f_deg = _shares({p: float(deg[1][p].mean()) for p in positions}) if deg else {p: 0.0 for p in positions}
    f_imp = _shares({p: float(imp[1][p].mean()) for p in positions}) if imp else {p: 0.0 for p in positions}
    out = []
    for p in positions:
        susp = f_deg[p] / (f_deg[p] + f_imp[p]) * d_share[p] if f_deg[p] > 0 else 0.0
        layer = LayerScores(p, names[p], layers[p].weight.shape, susp)
        if susp > 0:  # else k_l = 0 at every rate
            layer.orders = {"fi_deg": _order(deg[1][p]), "g_deg": _order(deg[0][p]),
                            "delta": _order(deltas[p].abs())}
            if imp is not None:
                layer.orders.update(fi_imp=_order(imp[1][p]), g_imp=_order(imp[0][p]))
        out.append(layer)
    return out


def select(scores: list[LayerScores], reduction_rate: float) -> Localisation:
    """The budgets k_l = round(n_l · susp_l · rate) and the chosen weights of each layer:
    (top_k FI_deg ∩ top_k G_deg ∩ top_k Δ) − (top_k FI_imp ∩ top_k G_imp)."""
    out = Localisation()
    for s in scores:
        n = s.shape.numel()
        k = min(n, round(n * s.susp * reduction_rate))
        out.budget[s.name] = k
        if k > 0:
            o = s.orders
            chosen = _first(o["fi_deg"], k, s.shape) & _first(o["g_deg"], k, s.shape) \
                & _first(o["delta"], k, s.shape)
            if "fi_imp" in o:
                chosen &= ~(_first(o["fi_imp"], k, s.shape) & _first(o["g_imp"], k, s.shape))
        else:
            chosen = torch.zeros(s.shape, dtype=torch.bool)
        rows, cols = torch.nonzero(chosen, as_tuple=True)
        out.counts[s.name] = len(rows)
        if len(rows):
            out.targets.append(Target(s.pos, s.name, rows, cols))
    return out


def localise(layers: list[nn.Module], names: list[str | None], x_deg: torch.Tensor, x_imp: torch.Tensor,
             deltas: dict[int, torch.Tensor], reduction_rate: float) -> Localisation:
    """Choose the weights to repair (module docstring, step 2): `select(score(...), rate)`.

    `layers`/`names` as in `Scope` (weights of M_N); `x_deg`, `x_imp` the head inputs of
    the deg and imp samples under M_N; `deltas[p]` = W_N − W_{N−1} of the Linear at p.
    """
    return select(score(layers, names, x_deg, x_imp, deltas), reduction_rate)


# --------------------------------------------------------------------------- evaluation
