"""`interp`: weight interpolation between M1 and its CE update.

    M2(α) = (1 − α)·M1 + α·M_CE,   α ∈ [0, 1]

applied tensor by tensor to the weights (Backward-Compatible Weight Interpolation for data
updates, Schumann et al. 2023; WiSE-FT, Wortsman et al. 2022, for fine-tuning). M_CE is
the shared "ce_update" reference NeuRecover repairs (`methods/neurecover/reference.py`):
M1 fine-tuned with plain CE on the whole D_update, exactly the model `ce` with `init=old`
trains for the same seed. It is trained once per scenario and update recipe and reused by
every trial, so an `interp` trial costs a weighted sum and an evaluation, not a training run.
α = 0 is M1, α = 1 is M_CE; in between, the path from M1 to M_CE trades new accuracy for
agreement with M1 (the two models share M1's initialisation, so the path stays in one basin).

- Class-incremental (M_CE has more outputs than M1): the rows of the output layer for the
  classes M1 does not know have no M1 counterpart; they are M_CE's rows, unscaled. The old
  classes' rows are interpolated like every other tensor.
- BatchNorm running statistics (`bn`): `interpolate` (the default) mixes them like the
  weights; `recompute` resets them and re-estimates them on D_update with the mixed weights
  (one forward pass, BatchNorm layers in train mode, dropout off, batch statistics averaged
  with weights proportional to batch size). The mean of two models' statistics is not the
  statistic of the mixed model's activations, so recomputing is the usual repair; measured
  on the demo scenario (bench/interp_bn.py, bench/results.md) the two are indistinguishable
  (validation hypervolume over α = 0.1..0.9: ratio 0.999, each dominating the other at about
  as many α), so the default is the cheaper one, which keeps a trial an evaluation; `bn` is a
  choice a search may try. At α = 0 and α = 1 the endpoint's own statistics are kept, so the
  endpoints are M1 and M_CE exactly. Integer buffers (`num_batches_tracked`) are M_CE's. A
  model without BatchNorm is unaffected.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ._base import HParam, UpdateMethod, UpdateResult, register_method
from .neurecover.reference import CEUpdateRef

BN_MODES = ("interpolate", "recompute")


def interpolate_state(m1: dict[str, torch.Tensor], m_ce: dict[str, torch.Tensor], alpha: float,
                      num_old: int) -> dict[str, torch.Tensor]:
    """(1 − α)·m1 + α·m_ce per floating-point tensor of M_CE's state dict. A tensor M1 holds
    with fewer rows (the output layer, `num_old` of them) has only those rows interpolated;
    the others stay M_CE's. Integer tensors are M_CE's."""
    out = {}
    for k, b in m_ce.items():
        a = m1.get(k)
        if a is None or not b.is_floating_point():
            out[k] = b.clone()
            continue
        a = a.to(b.device, b.dtype)
        if a.shape == b.shape:
            out[k] = (1 - alpha) * a + alpha * b
        elif a.dim() >= 1 and a.shape[1:] == b.shape[1:] and a.shape[0] == num_old:
            mixed = b.clone()
            mixed[:num_old] = (1 - alpha) * a + alpha * b[:num_old]
            out[k] = mixed
        else:
            raise ValueError(f"interp: M1's {k} has shape {tuple(a.shape)}, the update's {tuple(b.shape)}")
    return out


@torch.no_grad()
def recompute_bn_stats(model: nn.Module, x: torch.Tensor, batch_size: int) -> int:
    """Re-estimate every BatchNorm layer's running mean and variance on `x`: the average of
    the batches' statistics weighted by batch size (as `torch.optim.swa_utils.update_bn`,
    which weighs a short last batch like a full one), the rest of the model in eval mode
    (dropout off). Returns the number of BatchNorm layers reset."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return 0
    momenta = {m: m.momentum for m in bns}
    for m in bns:
        m.reset_running_stats()
    model.eval()
    for m in bns:
        m.train()
    for start in range(0, len(x), batch_size):
        batch = x[start:start + batch_size]
        for m in bns:  # running = (1 - n_b/n_seen)·running + (n_b/n_seen)·batch statistic
            m.momentum = len(batch) / (start + len(batch))
        model(batch)
    for m in bns:
        m.momentum = momenta[m]
    model.eval()
    return len(bns)


@register_method
class Interp(UpdateMethod):
    """Weight interpolation between M1 and the shared CE update (the module docstring has the maths)."""
    name = "interp"
    summary = ("weight interpolation (1-alpha)·M1 + alpha·M_CE with the shared CE update "
               "(BCWI / WiSE-FT): a trial is an evaluation, not a training run")
    needs = (CEUpdateRef,)
    hparams = (
        HParam("alpha", "float", 0.5, low=0.0, high=1.0,
               help="weight of the CE update: 0 gives M1, 1 gives the CE update"),
        HParam("bn", "choice", "interpolate", choices=BN_MODES,
               help="BatchNorm statistics of 0 < alpha < 1: interpolated, or re-estimated on D_update"),
    )

    def update(self, ctx, hp):
        alpha = float(hp["alpha"])
        m_ce = ctx.reference(CEUpdateRef).model
        model = copy.deepcopy(m_ce)
        state = interpolate_state(ctx.old_model.state_dict(), m_ce.state_dict(), alpha, ctx.num_old_classes)
        model.load_state_dict(state)
        bn_layers = 0
        if hp["bn"] == "recompute" and 0 < alpha < 1:
            bn_layers = recompute_bn_stats(model, ctx.x_update, ctx.recipe.batch_size)
        model.eval()
        bn = "recomputed on D_update" if bn_layers else \
            ("interpolated" if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
             and 0 < alpha < 1 else "none")
        return UpdateResult(model, {"alpha": alpha, "bn_stats": bn,
                                    "new_class_rows": "from the CE update" if ctx.num_classes > ctx.num_old_classes
                                    else "none"})
