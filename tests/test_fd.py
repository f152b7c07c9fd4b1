"""Focal distillation (`fd`): hand-computed weights, distances and loss; training smoke test."""

import math

import pytest
import torch
import torch.nn.functional as F

from flipsearch.errors import UsageError
from flipsearch.methods._base import UpdateContext
from flipsearch.methods.fd import FocalDistillation, distill_distance, fd_loss, focal_distillation, focal_weights
from flipsearch.models import build_model, expand_outputs
from flipsearch.train import Batch, TrainRecipe, fit


def test_focal_weights_are_alpha_plus_beta_on_teacher_correct_samples():
    old = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0], [5.0, 0.0]])
    y = torch.tensor([0, 0, 1, 2])  # correct, wrong, wrong, a class the teacher lacks
    w = focal_weights(old, y, alpha=1.5, beta=5.0)
    assert torch.equal(w, torch.tensor([6.5, 1.5, 1.5, 1.5]))


def test_lm_distance_by_hand():
    new = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    old = torch.tensor([[0.0, 0.0], [3.0, 1.0]])
    # ½·mean_c (Δ²): sample 0: ½·(1 + 4)/2 = 1.25; sample 1: ½·(9 + 1)/2 = 2.5
    d = distill_distance(new, old, "lm")
    assert torch.allclose(d, torch.tensor([1.25, 2.5]))


def test_kl_distance_by_hand_with_temperature_and_tau_squared():
    # At τ = 2 the teacher [2·ln 3, 0] has probabilities [3/4, 1/4]; the student [0, 0] has [1/2, 1/2].
    old = torch.tensor([[2 * math.log(3.0), 0.0], [1.0, -1.0]])
    new = torch.tensor([[0.0, 0.0], [1.0, -1.0]])
    kl0 = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    d = distill_distance(new, old, "kl", tau=2.0)
    assert torch.allclose(d, torch.tensor([kl0, 0.0]), atol=1e-6)
    d2 = distill_distance(new, old, "kl", tau=2.0, tau_squared=True)
    assert torch.allclose(d2, 4.0 * d, atol=1e-6)
    # KL(teacher ‖ student), not the reverse: the reverse has a different value here.
    rev = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert abs(kl0 - rev) > 1e-3 and not torch.isclose(d[0], torch.tensor(rev))


def test_fd_loss_by_hand():
    new = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    old = torch.tensor([[0.0, 0.0], [3.0, 1.0]])  # argmax 0 (tie -> first) and 0
    y = torch.tensor([0, 1])  # M1 correct on sample 0 only
    ce = F.cross_entropy(new, y)
    expected = ce + 0.5 * ((1 + 5) * 1.25 + 1 * 2.5) / 2
    got = fd_loss(new, old, y, lam=0.5, alpha=1.0, beta=5.0, distance="lm")
    assert torch.allclose(got, expected)
    assert torch.allclose(fd_loss(new, old, y, 0.0, 1.0, 5.0, "lm"), ce)


def test_distillation_uses_only_the_first_num_old_logits():
    torch.manual_seed(0)
    old = torch.randn(5, 3)
    new = torch.randn(5, 6)
    y = torch.tensor([0, 1, 2, 4, 5])
    for distance in ("lm", "kl"):
        ref = focal_distillation(new[:, :3], old, y, 1.0, 5.0, distance, tau=5.0)
        got = focal_distillation(new, old, y, 1.0, 5.0, distance, tau=5.0)
        assert torch.allclose(got, ref)
        changed = new.clone()
        changed[:, 3:] += torch.randn(5, 3) * 10  # new-class logits do not enter the distillation
        assert torch.allclose(focal_distillation(changed, old, y, 1.0, 5.0, distance, tau=5.0), ref)


def test_gradient_flows_only_into_the_student():
    old = torch.randn(4, 3, requires_grad=True)
    new = torch.randn(4, 5, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3])
    for distance in ("lm", "kl"):
        fd_loss(new, old, y, 1.0, 1.0, 5.0, distance, tau=5.0).backward()
    assert old.grad is None
    assert new.grad is not None and new.grad.abs().sum() > 0


def test_hparams_schema():
    fd = FocalDistillation()
    hp = fd.resolve({})
    assert hp == {"lambda": 1.0, "alpha": 1.0, "beta": 5.0, "distance": "kl", "tau": 5.0,
                  "tau_squared": False, "init": "old"}
    assert fd.resolve({"tau_squared": "true", "distance": "lm"})["tau_squared"] is True
    with pytest.raises(UsageError):
        fd.resolve({"tau": 0.001})
    with pytest.raises(UsageError):
        fd.resolve({"distance": "l2"})


def _context(num_old: int, num_classes: int, n: int = 64) -> UpdateContext:
    """D_update of learnable 1x8x8 blobs; M1 briefly trained on the old-class samples."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % num_classes
    x = torch.randn(num_classes, 1, 8, 8, generator=g)[y] + 0.5 * torch.randn(n, 1, 8, 8, generator=g)
    recipe = TrainRecipe(epochs=4, batch_size=16, lr=0.05)
    old = build_model("small", num_old, (1, 8, 8))
    fit(old, x[y < num_old], y[y < num_old], recipe, seed=1)

    def new_model(init):
        model = build_model("small", num_classes, (1, 8, 8))
        return expand_outputs(old, model, num_old) if init == "old" else model

    return UpdateContext(x, y, num_old, num_classes, old.eval(), new_model, recipe, 0, torch.device("cpu"))


@pytest.mark.parametrize("num_old,num_classes,distance", [(4, 4, "kl"), (3, 5, "lm")])
def test_make_loss_trains_inside_fit(num_old, num_classes, distance):
    ctx = _context(num_old, num_classes)
    method = FocalDistillation()
    hp = method.resolve({"distance": distance, "init": "scratch"})
    loss_fn = method.make_loss(ctx, hp)
    # The loss on a batch is fd_loss against M1's cached logits.
    model = ctx.new_model("scratch")
    idx = torch.arange(8)
    logits = model(ctx.x_update[idx])
    expected = fd_loss(logits, ctx.old_logits()[idx], ctx.y_update[idx], 1.0, 1.0, 5.0, distance, 5.0)
    assert torch.allclose(loss_fn(logits, Batch(ctx.x_update[idx], ctx.y_update[idx], idx, False)), expected)
    result = method.update(ctx, hp)
    losses = result.fit.epoch_losses
    assert len(losses) == ctx.recipe.epochs and losses[-1] < losses[0]
