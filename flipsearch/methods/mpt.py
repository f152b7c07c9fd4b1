"""`mpt`: Margin Preserving Training (Ricci et al., AAAI 2026; code `miccunifi/negative_flip_MPT`).

With C_old = the first `num_old` classes (M1's) and C_new = the rest:

    loss = L_Δ(z, y) + λ_old · FD(z[:, :num_old], z_M1) + λ_new · FD(z, z_φnew)

- Margin-calibrated loss: L_Δ = CE(z̃, y) with z̃_j = z_j + k·1[j ≥ num_old]. The bias makes
  new classes look stronger *during training*, so the trained model learns to beat them by a
  margin of about k on old-class samples; at inference the raw logits are used, and old
  classes keep that margin. The shift lives only inside `margin_calibrated_ce`, which builds
  a new tensor (the reference code adds k in place to the model's output); the model itself
  is never wrapped or hooked, so its forward pass is the plain one.
- Double-source focal distillation (`fd.focal_distillation`, unshifted logits): from M1 on the
  first num_old logits, focal weight from M1's correctness (samples of new classes get α, as
  M1 cannot be right on them); and from φ_new — a model trained from scratch with plain CE on
  D_update, shared across trials — on all logits, focal weight from φ_new's correctness.

Reference defaults: k = 4 (grid {0, 1, 2, 4}), α = 1, β = 5, τ = 5 without τ², λ = 1 for KL
(0.4 for LM), M2 trained from scratch. With no new classes (paper 1's arrangements) the bias
has nothing to act on: L_Δ = CE and MPT is double-source FD; `update` records that in `info`.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F

from ..references import PhiNew
from ..errors import FlipsearchError
from ._base import HParam, LossMethod, Teacher, register_method
from .ce import INIT
from .fd import ALPHA, BETA, DISTANCE, TAU, TAU_SQUARED, focal_distillation

NO_NEW_CLASSES_NOTE = "no new classes: margin bias k inactive; MPT = double-source FD"
ZERO_K_NOTE = "k = 0: margin bias off; MPT = double-source FD"


def margin_calibrated_ce(logits: torch.Tensor, y: torch.Tensor, k: float, num_old: int) -> torch.Tensor:
    """L_Δ = CE(z + k·1[j ≥ num_old], y). Out of place: `logits` is left untouched."""
    bias = torch.zeros(logits.shape[1], dtype=logits.dtype, device=logits.device)
    bias[num_old:] = k
    return F.cross_entropy(logits + bias, y)


def mpt_loss(logits: torch.Tensor, y: torch.Tensor, old_logits: torch.Tensor, phi_logits: torch.Tensor,
             k: float, lambda_old: float, lambda_new: float, alpha: float, beta: float,
             distance: str = "kl", tau: float = 1.0, tau_squared: bool = False) -> torch.Tensor:
    """L_Δ(z, y) + λ_old·FD(z[:, :K_old], z_M1) + λ_new·FD(z, z_φnew), K_old = old_logits.shape[1]."""
    if phi_logits.shape[1] != logits.shape[1]:
        raise ValueError(f"phi_new has {phi_logits.shape[1]} outputs but the model has {logits.shape[1]}")
    loss = margin_calibrated_ce(logits, y, k, old_logits.shape[1])
    if lambda_old:
        loss = loss + lambda_old * focal_distillation(logits, old_logits, y, alpha, beta, distance, tau, tau_squared)
    if lambda_new:
        loss = loss + lambda_new * focal_distillation(logits, phi_logits, y, alpha, beta, distance, tau, tau_squared)
    return loss


@register_method
class MPT(LossMethod):
    """Margin preserving training: CE with +k on the new-class logits (training only) plus focal distillation
    from M1 and from phi_new (see the module docstring)."""
    name = "mpt"
    summary = ("margin preserving training: CE with +k on new-class logits (training only) "
               "+ focal distillation from M1 and from phi_new")
    needs = (PhiNew,)
    hparams = (
        HParam("k", "float", 4.0, low=0.0, high=20.0,
               help="bias added to new-class logits inside the training loss (reference grid 0,1,2,4)"),
        HParam("lambda_old", "float", 1.0, low=0.0, high=100.0, help="weight of focal distillation from M1"),
        HParam("lambda_new", "float", 1.0, low=0.0, high=100.0, help="weight of focal distillation from phi_new"),
        ALPHA, BETA, DISTANCE, TAU, TAU_SQUARED,
        replace(INIT, default="scratch"),
    )

    def make_loss(self, ctx, hp):
        phi = ctx.reference(PhiNew)
        old = Teacher(ctx.old_model, ctx.old_logits())
        new = Teacher(phi, ctx.teacher_logits(PhiNew.kind, phi))
        if new.cached.shape[1] != ctx.num_classes:
            raise FlipsearchError(f"reference model phi_new has {new.cached.shape[1]} outputs, "
                                  f"expected {ctx.num_classes}; rebuild the reference cache")
        args = (hp["k"], hp["lambda_old"], hp["lambda_new"], hp["alpha"], hp["beta"],
                hp["distance"], hp["tau"], hp["tau_squared"])

        def loss_fn(logits, batch):
            return mpt_loss(logits.float(), batch.y, old(batch), new(batch), *args)

        return loss_fn

    def facts(self, ctx, hp) -> dict:
        has_new = ctx.num_classes > ctx.num_old_classes
        info = {"mpt_bias_active": bool(has_new and hp["k"] > 0)}
        if not has_new:
            info["mpt_note"] = NO_NEW_CLASSES_NOTE
        elif hp["k"] == 0:
            info["mpt_note"] = ZERO_K_NOTE
        return info
