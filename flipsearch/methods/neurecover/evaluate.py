"""NeuRecover's fitness and the batched evaluation of many candidate weight values at once."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .localisation import EVAL_ELEMENTS, Target

class Fitness(NamedTuple):
    """NeuRecover's fitness of P candidates: the value and, per candidate, the I_neg rows patched and I_pos
    rows kept intact."""
    value: torch.Tensor  # [P]
    patched: torch.Tensor  # [P] number of I_neg rows classified correctly
    intact: torch.Tensor  # [P] number of I_pos rows classified correctly


def fitness(logits: torch.Tensor, y: torch.Tensor, n_neg: int, alpha: float) -> Fitness:
    """NeuRecover's fitness of P candidates from their logits [P, N, C] over N rows whose
    first `n_neg` are I_neg and the rest I_pos, labels `y` [N]:
    (N_patched/|I_neg| + 1)/(L_neg + 1) + α·(N_intact/|I_pos| + 1)/(L_pos + 1), L = mean CE.
    A part with no rows contributes 0."""
    p, n, _ = logits.shape
    # CE = logsumexp(z) − z_y, with the max pass shared by the stabiliser and the prediction
    # (cheaper on CPU than F.cross_entropy + argmax over a short class axis).
    top, pred = logits.max(-1)
    lse = top + (logits - top[..., None]).exp().sum(-1).log()
    ce = lse - logits.gather(-1, y.expand(p, n)[..., None]).squeeze(-1)
    ok = pred == y

    def term(sl: slice) -> tuple[torch.Tensor, torch.Tensor]:
        hits = ok[:, sl].sum(1)
        if ce[:, sl].shape[1] == 0:
            return torch.zeros(p, device=logits.device), hits
        return (hits / ce[:, sl].shape[1] + 1) / (ce[:, sl].mean(1) + 1), hits

    neg, patched = term(slice(0, n_neg))
    pos, intact = term(slice(n_neg, n))
    return Fitness(neg + alpha * pos, patched, intact)


def _per_row(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a per-sample module to [P, N, ...] by folding P into the batch."""
    z = m(x.reshape(x.shape[0] * x.shape[1], *x.shape[2:]))
    return z.view(x.shape[0], x.shape[1], *z.shape[1:])


class PatchedHead:
    """The head's logits with P candidate values of the chosen weights, in one batched pass.

    A candidate is a vector of values for the targets' entries, concatenated in target
    order. The layers before the first edited one are run once, here; per call, an edited
    Linear computes its unedited output and adds δ_k · x[..., i_k] to output column j_k
    (δ = candidate − original), so only the layers from the first edit on see the
    particle dimension.
    """

    def __init__(self, layers: list[nn.Module], targets: list[Target], head_in: torch.Tensor):
        self.layers, self.targets = layers, targets
        self.first = min(t.pos for t in targets)
        self.slices: dict[int, tuple[Target, slice]] = {}
        start = 0
        for t in targets:
            self.slices[t.pos] = (t, slice(start, start + len(t.rows)))
            start += len(t.rows)
        with torch.no_grad():
            h = head_in.clone()
            for m in layers[:self.first]:
                h = m(h)
            self.prefix = h
            self.original = torch.cat([layers[t.pos].weight[t.rows, t.cols] for t in targets]).detach()
        widths = [self.prefix.shape[-1]] + [m.out_features for m in layers[self.first:] if isinstance(m, nn.Linear)]
        self.width = max(widths)

    @torch.no_grad()
    def logits(self, values: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Logits [P, N, C] of candidates `values` [P, K] on prefix rows `rows` [N]."""
        x = self.prefix[rows]  # [N, F], shared by all particles until the first edit
        for pos in range(self.first, len(self.layers)):
            m = self.layers[pos]
            if pos not in self.slices:
                x = _per_row(m, x)
                continue
            t, sl = self.slices[pos]
            out = F.linear(x, m.weight, m.bias)
            if pos == self.first:  # give the shared output its particle axis
                out = out.unsqueeze(0).repeat(len(values), 1, 1)
            delta = values[:, sl] - self.original[sl]  # [P, k]
            x = out.index_add_(-1, t.rows, x[..., t.cols] * delta[:, None, :])
        return x

    def fitness(self, values: torch.Tensor, rows: torch.Tensor, y: torch.Tensor, n_neg: int,
                alpha: float) -> Fitness:
        """`fitness` of every candidate, in chunks of particles that bound memory."""
        chunk = max(1, EVAL_ELEMENTS // max(1, len(rows) * self.width))
        parts = [fitness(self.logits(values[s:s + chunk], rows), y, n_neg, alpha)
                 for s in range(0, len(values), chunk)]
        return Fitness(*(torch.cat(z) for z in zip(*parts)))
