"""`ce`: plain cross-entropy retraining, the "No Treatment" baseline."""

from __future__ import annotations

from ..train import cross_entropy
from ._base import HParam, LossMethod, register_method

INIT = HParam("init", "choice", "old", choices=("old", "scratch"),
              help="old: fine-tune M1 (paper 1); scratch: train a fresh model (MPT)")


@register_method
class CE(LossMethod):
    """Plain cross-entropy retraining on D_update: the "no treatment" baseline every report compares against."""
    name = "ce"
    summary = "plain cross-entropy retraining on D_update (No Treatment baseline)"
    hparams = (INIT,)

    def make_loss(self, ctx, hp):
        return cross_entropy
