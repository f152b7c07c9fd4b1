"""The shared training loop: determinism, history, divergence, clipping, augmentation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from flipsearch.errors import DivergedError, UsageError
from flipsearch.models import build_model
from flipsearch.train import TrainRecipe, augment_batch, fit, predict_logits


def _data(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = (x.mean(dim=(1, 2, 3)) > 0).long()
    return x, y


def test_fit_is_deterministic_and_learns():
    x, y = _data()
    recipe = TrainRecipe(epochs=5, batch_size=16, lr=0.05)
    a, b = build_model("small", 2, (1, 8, 8), seed=0), build_model("small", 2, (1, 8, 8), seed=0)
    ra, rb = fit(a, x, y, recipe, seed=1), fit(b, x, y, recipe, seed=1)
    assert ra.epoch_losses == rb.epoch_losses
    assert ra.epoch_losses[-1] < ra.epoch_losses[0]
    assert torch.equal(predict_logits(a, x), predict_logits(b, x))


def test_keep_history_returns_the_last_epochs_weights():
    x, y = _data()
    model = build_model("small", 2, (1, 8, 8), seed=0)
    result = fit(model, x, y, TrainRecipe(epochs=3, batch_size=32), seed=0, keep_history=2)
    assert len(result.history) == 2
    final = model.state_dict()
    assert all(torch.equal(result.history[-1][k], final[k].cpu()) for k in final)
    assert not all(torch.equal(result.history[0][k], final[k].cpu()) for k in final)


def test_nan_loss_raises_diverged_in_the_first_epoch():
    x, y = _data()
    model = build_model("small", 2, (1, 8, 8), seed=0)
    with pytest.raises(DivergedError, match="epoch 1"):
        fit(model, x, y, TrainRecipe(epochs=50), seed=0, loss_fn=lambda logits, b: F.cross_entropy(logits, b.y) * torch.nan)


def test_grad_clip_bounds_the_step():
    x, y = _data()
    big = lambda logits, b: F.cross_entropy(logits, b.y) * 1e6  # noqa: E731 - a huge gradient
    moved = {}
    for clip in (0.0, 1e-3):
        model = build_model("small", 2, (1, 8, 8), seed=0)
        before = [p.detach().clone() for p in model.parameters()]
        fit(model, x[:16], y[:16], TrainRecipe(epochs=1, batch_size=16, lr=0.1, momentum=0.0, weight_decay=0.0,
                                               grad_clip=clip), seed=0, loss_fn=big)
        moved[clip] = float(torch.sqrt(sum(((p.detach() - q) ** 2).sum() for p, q in zip(model.parameters(), before))))
    assert moved[1e-3] == pytest.approx(0.1 * 1e-3, rel=1e-3)  # one SGD step of norm lr * clip
    assert moved[0.0] > 1000 * moved[1e-3]


def test_augment_crops_and_flips_within_the_padded_image():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4) + 1
    out = augment_batch(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    padded_values = set(torch.cat([x.flatten(), torch.zeros(1)]).tolist())
    assert set(out.flatten().tolist()) <= padded_values


def test_bad_recipes_are_usage_errors():
    with pytest.raises(UsageError, match="lr must be"):
        TrainRecipe(lr=0)
    with pytest.raises(UsageError, match="grad_clip"):
        TrainRecipe().with_overrides(grad_clip=-1)
    with pytest.raises(UsageError, match="unknown training setting 'lrr'"):
        TrainRecipe().with_overrides(lrr=0.1)
