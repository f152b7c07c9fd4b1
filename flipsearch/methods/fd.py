"""`fd`: focal distillation, from Positive-Congruent Training (Yan et al., CVPR 2021).

    loss = CE(z_new, y) + λ · mean_i[ w_i · D(z_new_i, z_old_i) ],   w_i = α + β·1[argmax z_old_i = y_i]

The focal weight puts β extra weight on the samples the teacher (M1) classifies correctly:
those are the ones a negative flip would break. Two distances D (per sample):

- `lm` (logit matching): D = ½ · mean_c (z_new_c − z_old_c)²  (MPT code; the PCT paper sums
  over classes instead, which only rescales λ by the class count).
- `kl`: D = Σ_c p_old,c (log p_old,c − log p_new,c) with p = softmax(z / τ), i.e.
  KL(softmax(z_old/τ) ‖ softmax(z_new/τ)); times τ² when `tau_squared` (PCT code uses τ = 100
  with τ²; MPT code τ = 5 without).

When M2 has more classes than the teacher (class-incremental), the distance is taken on M2's
first `teacher.shape[1]` logits: old class j is new-model output j. The teacher's logits are
detached, so gradient flows into the student only. MPT (`mpt.py`) reuses these functions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._base import HParam, LossMethod, Teacher, register_method
from .ce import INIT

DISTANCES = ("lm", "kl")


def focal_weights(old_logits: torch.Tensor, y: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """w_i = α + β · 1[argmax old_logits_i = y_i], shape [N].

    A label the teacher has no output for (a new class) can never match its argmax, so such
    samples get weight α."""
    correct = (old_logits.argmax(dim=1) == y).to(old_logits.dtype)
    return alpha + beta * correct


def distill_distance(new_logits: torch.Tensor, old_logits: torch.Tensor, distance: str = "kl",
                     tau: float = 1.0, tau_squared: bool = False) -> torch.Tensor:
    """Per-sample distance D_i between student and teacher logits of equal width, shape [N].

    lm: ½ · mean_c (z_new − z_old)²;  kl: KL(softmax(z_old/τ) ‖ softmax(z_new/τ)) summed over
    classes, × τ² if `tau_squared`. The teacher is detached."""
    if new_logits.shape != old_logits.shape:
        raise ValueError(f"student logits {tuple(new_logits.shape)} and teacher logits "
                         f"{tuple(old_logits.shape)} differ in shape")
    old_logits = old_logits.detach()
    if distance == "lm":
        return 0.5 * (new_logits - old_logits).pow(2).mean(dim=1)
    if distance == "kl":
        log_p_new = F.log_softmax(new_logits / tau, dim=1)
        log_p_old = F.log_softmax(old_logits / tau, dim=1)
        # kl_div(input, target) = Σ target · (log target − input): KL(p_old ‖ p_new).
        kl = F.kl_div(log_p_new, log_p_old, reduction="none", log_target=True).sum(dim=1)
        return kl * (tau * tau) if tau_squared else kl
    raise ValueError(f"unknown distillation distance {distance!r}; choose one of {list(DISTANCES)}")


def focal_distillation(new_logits: torch.Tensor, teacher_logits: torch.Tensor, y: torch.Tensor,
                       alpha: float, beta: float, distance: str = "kl", tau: float = 1.0,
                       tau_squared: bool = False) -> torch.Tensor:
    """mean_i[ w_i · D(z_new_i[:K], z_teacher_i) ] with K = the teacher's class count and the
    focal weight w from the teacher's correctness (scalar)."""
    k = teacher_logits.shape[1]
    if new_logits.shape[1] < k:
        raise ValueError(f"student has {new_logits.shape[1]} outputs, fewer than the teacher's {k}")
    w = focal_weights(teacher_logits.detach(), y, alpha, beta)
    d = distill_distance(new_logits[:, :k], teacher_logits, distance, tau, tau_squared)
    return (w * d).mean()


def fd_loss(new_logits: torch.Tensor, old_logits: torch.Tensor, y: torch.Tensor, lam: float,
            alpha: float, beta: float, distance: str = "kl", tau: float = 1.0,
            tau_squared: bool = False) -> torch.Tensor:
    """CE(z_new, y) + λ · focal_distillation(z_new, z_old, y, …)."""
    ce = F.cross_entropy(new_logits, y)
    if lam == 0:
        return ce
    return ce + lam * focal_distillation(new_logits, old_logits, y, alpha, beta, distance, tau, tau_squared)


# Shared with MPT, which uses the same focal distillation twice.
ALPHA = HParam("alpha", "float", 1.0, low=0.0, high=100.0,
               help="focal weight of every sample (w = alpha + beta·[teacher correct])")
BETA = HParam("beta", "float", 5.0, low=0.0, high=100.0,
              help="extra focal weight of samples the teacher classifies correctly")
DISTANCE = HParam("distance", "choice", "kl", choices=DISTANCES,
                  help="lm: ½·mean squared logit difference; kl: KL(teacher ‖ student) at temperature tau")
TAU = HParam("tau", "float", 5.0, low=0.01, high=1000.0, log=True,
             help="softmax temperature of the kl distance (MPT: 5; PCT: 100 with tau_squared)")
TAU_SQUARED = HParam("tau_squared", "bool", False,
                     help="multiply the kl distance by tau² (Hinton-style gradient scale; PCT code)")


@register_method
class FocalDistillation(LossMethod):
    """Focal distillation from M1 (PCT): CE + lambda · mean[(alpha + beta·[M1 correct]) · D(M2, M1)] (see the
    module docstring)."""
    name = "fd"
    summary = "focal distillation from M1 (PCT): CE + lambda·mean[(alpha + beta·[M1 correct])·D(M2, M1)]"
    hparams = (
        HParam("lambda", "float", 1.0, low=0.0, high=100.0, help="weight of the focal distillation term"),
        ALPHA, BETA, DISTANCE, TAU, TAU_SQUARED, INIT,
    )

    def make_loss(self, ctx, hp):
        teacher = Teacher(ctx.old_model, ctx.old_logits())
        lam, alpha, beta = hp["lambda"], hp["alpha"], hp["beta"]
        distance, tau, tau_sq = hp["distance"], hp["tau"], hp["tau_squared"]

        def loss_fn(logits, batch):
            return fd_loss(logits.float(), teacher(batch), batch.y, lam, alpha, beta, distance, tau, tau_sq)

        return loss_fn
