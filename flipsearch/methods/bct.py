"""`bct`: backward-compatibility training (Bansal, Srivastava et al.; BCML 1.4.2).

BackwardCompatibilityML's new-error loss (Bansal et al. 2019; Srivastava et al. 2020), a
loss on M2's predictions; not the BCT of Shen et al. 2020 ("Towards Backward-Compatible
Representation Learning", an influence loss on embeddings), which PCT and MPT compare
against under the same name.

Per batch of N samples, S = the samples M1 classifies correctly (argmax z_old = y). Then

    loss = CE(z_new, y) + λ_c · dissonance

- `new-error` (NE): dissonance = (1/|S|) Σ_{i∈S} CE(z_new_i, y_i)  — penalises *new* errors
  on what M1 got right. This is BCML 1.4.2's `BCCrossEntropyLoss` exactly (the tests check it
  against the installed package).
- `strict-imitation` (SI): dissonance = (1/|S|) Σ_{i∈S} KL(softmax(z_old_i) ‖ softmax(z_new_i[:K]))
  with K = M1's class count — M2 imitates M1's whole distribution where M1 is right.
- Empty S: dissonance = 0 (BCML does the same).
- `dissonance_scale`: `support` divides by |S| (BCML 1.4.2, the default; each M1-correct sample
  then weighs about 1 + λ_c·N/|S|); `batch` divides by N instead (= support × |S|/N, BCML's
  unreleased master). `reduction` ("mean" | "sum") applies to the base CE only, as in BCML.

Where flipsearch departs from BCML 1.4.2 (issue #115 and the installed source):
- BCML's `StrictImitationCrossEntropyLoss` uses CE against argmax M1 on S; on S that argmax
  *is* y, so the loss is numerically identical to NE — no imitation at all.
- BCML's `StrictImitationKLDivergenceLoss` calls `F.kl_div(h1_log_softmax, h2_log_softmax)`:
  arguments reversed, and log-probabilities passed where probabilities are expected, so the
  result is NaN whenever S is non-empty (its default `reduction="mean"` would also divide by |S|·C).
  flipsearch's SI is the real imitation KL(p_M1 ‖ p_M2) above, summed over classes, mean over S.
- BCML runs M2 a second time on x_S; flipsearch reuses the rows of the one forward pass over
  the batch. The two agree for a deterministic forward (eval mode); in train mode BCML's second
  pass sees other BatchNorm statistics and dropout masks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._base import HParam, LossMethod, Teacher, register_method
from .ce import INIT

VARIANTS = ("new-error", "strict-imitation")
SCALES = ("support", "batch")


def bct_loss(new_logits: torch.Tensor, old_logits: torch.Tensor, y: torch.Tensor, lambda_c: float,
             variant: str = "new-error", dissonance_scale: str = "support",
             reduction: str = "mean") -> torch.Tensor:
    """CE(z_new, y) + λ_c · dissonance over S = {i : argmax z_old_i = y_i} (see module doc).

    Vectorised over the batch with a 0/1 mask, so an empty S needs no branch (and no
    host-device sync): Σ_S / max(|S|, 1) = 0 there."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown BCT variant {variant!r}; choose one of {list(VARIANTS)}")
    if dissonance_scale not in SCALES:
        raise ValueError(f"unknown dissonance_scale {dissonance_scale!r}; choose one of {list(SCALES)}")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', not {reduction!r}")
    old_logits = old_logits.detach()
    base = F.cross_entropy(new_logits, y, reduction=reduction)
    if lambda_c == 0:
        return base
    in_s = (old_logits.argmax(dim=1) == y).to(new_logits.dtype)
    if variant == "new-error":
        per_sample = F.cross_entropy(new_logits, y, reduction="none")
    else:
        k = old_logits.shape[1]
        per_sample = F.kl_div(F.log_softmax(new_logits[:, :k], dim=1), F.log_softmax(old_logits, dim=1),
                              reduction="none", log_target=True).sum(dim=1)
    total = (per_sample * in_s).sum()
    denom = in_s.sum().clamp(min=1) if dissonance_scale == "support" else len(y)
    return base + lambda_c * (total / denom)


@register_method
class BCT(LossMethod):
    """Backward-compatibility training (BCML): cross-entropy plus `lambda_c` × a dissonance term on the
    samples M1 gets right (see the module docstring for the maths)."""
    name = "bct"
    summary = ("backward-compatibility training: BackwardCompatibilityML's new-error loss (Bansal et al. 2019; "
               "Srivastava et al. 2020), CE + lambda_c·dissonance on the samples M1 gets right; "
               "not Shen et al. 2020's BCT (representation learning), which PCT and MPT compare against")
    hparams = (
        HParam("lambda_c", "float", 1.0, low=0.0, high=100.0,
               help="weight of the dissonance (BCML sweeps 0..1 in steps of 0.25; larger is legal)"),
        HParam("variant", "choice", "new-error", choices=VARIANTS,
               help="new-error: CE on M1-correct samples; strict-imitation: KL(M1 ‖ M2) on them"),
        HParam("dissonance_scale", "choice", "support", choices=SCALES,
               help="support: dissonance is a mean over |S| (BCML 1.4.2); batch: rescaled by |S|/N"),
        INIT,
    )

    def make_loss(self, ctx, hp):
        teacher = Teacher(ctx.old_model, ctx.old_logits())
        lam, variant, scale = hp["lambda_c"], hp["variant"], hp["dissonance_scale"]

        def loss_fn(logits, batch):
            return bct_loss(logits.float(), teacher(batch), batch.y, lam, variant, scale)

        return loss_fn
