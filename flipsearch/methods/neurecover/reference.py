"""NeuRecover's input: the CE update of M1 with its training history, and its repair split.

Equal footing with the retraining methods: the CE update is trained on the whole D_update,
exactly as `ce` with `init=old` is (same seed, same rows), and the repair split is a
stratified share of those same rows, as the reference toolkit draws it from the update's
training data. No method sees rows another does not, and none sees the validation split.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ...references import Reference, cpu_state
from ...train import fit

REPAIR_FRACTION = 0.2  # share of D_update NeuRecover searches on


@dataclass
class CEUpdate:
    """M1 fine-tuned with CE on D_update; `history` the weights after its last two epochs;
    `repair_idx` the repair split and `train_idx` the rows it trained on (indices into D_update)."""

    model: nn.Module
    history: list[dict[str, torch.Tensor]]
    repair_idx: torch.Tensor
    train_idx: torch.Tensor


def repair_split(y: torch.Tensor, seed: int, fraction: float = REPAIR_FRACTION) -> torch.Tensor:
    """A stratified `fraction` of D_update's rows (indices), deterministic from `seed`."""
    from ...data import stratified_holdout

    _, repair_idx = stratified_holdout(y.cpu().numpy(), fraction, seed + 7919)
    return torch.from_numpy(repair_idx)


class CEUpdateRef(Reference):
    """The reference NeuRecover repairs: the plain CE update of M1 on the repair fraction of D_update, cached
    like M1."""
    kind = "ce_update"

    @classmethod
    def spec(cls, b):
        return {"update_recipe": b.update_recipe.as_dict(), "repair_fraction": REPAIR_FRACTION,
                "rule": "repair-from-trained-rows", **b.m1_key_spec()}

    @classmethod
    def build(cls, b, inputs):
        model = inputs.new_model("old")
        result = fit(model, inputs.x_update, inputs.y_update, b.update_recipe, seed=b.seed + 1, keep_history=2)
        return {"state_dict": cpu_state(model), "history": result.history}

    @classmethod
    def load(cls, b, payload, inputs):
        device = inputs.x_update.device
        return CEUpdate(b.model(b.num_classes, payload["state_dict"]).eval(), payload["history"],
                        repair_split(inputs.y_update, b.seed).to(device),
                        torch.arange(len(inputs.y_update), device=device))
