"""`optimizer: adam` is AdamW: weight decay decoupled from the adaptive gradient step."""

from __future__ import annotations

import torch
from torch import nn

from flipsearch.train import TrainRecipe, make_optimizer


def _one_step_with_zero_gradient(recipe: TrainRecipe) -> tuple[torch.optim.Optimizer, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    before = model.weight.detach().clone()
    opt = make_optimizer(model, recipe)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # the loss is flat: only weight decay acts
    opt.step()
    return opt, before, model.weight.detach().clone()


def test_adam_is_adamw_with_decoupled_weight_decay():
    recipe = TrainRecipe(optimizer="adam", lr=0.01, weight_decay=5e-4)
    opt, before, after = _one_step_with_zero_gradient(recipe)
    assert type(opt) is torch.optim.AdamW
    assert opt.defaults["weight_decay"] == 5e-4
    # Decoupled: w <- w·(1 − lr·wd), a 5e-6 relative shrink. Coupled L2 in Adam would feed
    # g = wd·w to the adaptive step, which normalises it to a move of ~lr = 0.01 per weight.
    torch.testing.assert_close(after, before * (1 - 0.01 * 5e-4), rtol=0, atol=1e-7)


def test_sgd_keeps_momentum_and_coupled_decay():
    recipe = TrainRecipe(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-2)
    opt, before, after = _one_step_with_zero_gradient(recipe)
    assert type(opt) is torch.optim.SGD and opt.defaults["momentum"] == 0.9
    torch.testing.assert_close(after, before - 0.1 * 1e-2 * before, rtol=0, atol=1e-7)
