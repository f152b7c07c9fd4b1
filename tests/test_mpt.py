"""Margin Preserving Training (`mpt`): the training-only margin bias and double-source FD."""

import math

import pytest
import torch
import torch.nn.functional as F

from flipsearch.errors import FlipsearchError, UsageError
from flipsearch.methods._base import UpdateContext
from flipsearch.references import PhiNew
from flipsearch.methods.fd import distill_distance, focal_distillation, focal_weights
from flipsearch.methods.mpt import MPT, NO_NEW_CLASSES_NOTE, margin_calibrated_ce, mpt_loss
from flipsearch.models import build_model, expand_outputs
from flipsearch.train import Batch, TrainRecipe, fit


def test_margin_bias_shifts_only_new_class_logits_by_hand():
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]])
    y = torch.tensor([0, 2])
    before = logits.clone()
    got = margin_calibrated_ce(logits, y, k=4.0, num_old=2)
    shifted = [[1.0, 2.0, 7.0], [0.5, -1.0, 4.0]]
    by_hand = (math.log(sum(math.exp(v) for v in shifted[0])) - 1.0
               + math.log(sum(math.exp(v) for v in shifted[1])) - 4.0) / 2
    assert got.item() == pytest.approx(by_hand, rel=1e-6)
    assert torch.equal(logits, before)  # the caller's logits are never shifted


def test_margin_loss_reduces_to_ce_when_k_is_zero_or_no_new_classes():
    torch.manual_seed(0)
    logits, y = torch.randn(6, 5), torch.tensor([0, 1, 2, 3, 4, 0])
    ce = F.cross_entropy(logits, y)
    assert torch.allclose(margin_calibrated_ce(logits, y, 0.0, 3), ce)
    assert torch.allclose(margin_calibrated_ce(logits, y, 4.0, 5), ce)
    old, phi = torch.randn(6, 5), torch.randn(6, 5)
    assert torch.allclose(mpt_loss(logits, y, old, phi, 4.0, 0.0, 0.0, 1.0, 5.0), ce)


def test_old_term_uses_first_num_old_logits_and_gives_new_class_samples_alpha():
    torch.manual_seed(1)
    logits, old, phi = torch.randn(4, 5), torch.randn(4, 3), torch.randn(4, 5)
    y = torch.cat([old[:2].argmax(1), torch.tensor([3, 4])])  # M1 right on 0, 1; 2, 3 are new classes
    assert torch.equal(focal_weights(old, y, 1.0, 5.0), torch.tensor([6.0, 6.0, 1.0, 1.0]))
    d = distill_distance(logits[:, :3], old, "kl", tau=5.0)
    expected = F.cross_entropy(logits, y) + 2.0 * (torch.tensor([6.0, 6.0, 1.0, 1.0]) * d).mean()
    assert torch.allclose(mpt_loss(logits, y, old, phi, 0.0, 2.0, 0.0, 1.0, 5.0, "kl", 5.0), expected)


def test_phi_new_term_uses_all_logits_and_phi_correctness():
    torch.manual_seed(2)
    logits, old, phi = torch.randn(4, 5), torch.randn(4, 3), torch.randn(4, 5)
    y = torch.tensor([phi[0].argmax().item(), 0, 1, phi[3].argmax().item()])
    w = focal_weights(phi, y, 1.0, 5.0)
    for distance in ("lm", "kl"):
        d = distill_distance(logits, phi, distance, tau=5.0)
        expected = F.cross_entropy(logits, y) + 3.0 * (w * d).mean()
        got = mpt_loss(logits, y, old, phi, 0.0, 0.0, 3.0, 1.0, 5.0, distance, 5.0)
        assert torch.allclose(got, expected)
        changed = logits.clone()
        changed[:, 4] += 2.0  # a new-class logit moves the phi_new term
        term = got - F.cross_entropy(logits, y)
        term_changed = mpt_loss(changed, y, old, phi, 0.0, 0.0, 3.0, 1.0, 5.0, distance, 5.0) \
            - F.cross_entropy(changed, y)
        assert not torch.allclose(term_changed, term)


def test_full_loss_is_the_sum_of_its_three_terms():
    torch.manual_seed(3)
    logits, old, phi = torch.randn(8, 6), torch.randn(8, 4), torch.randn(8, 6)
    y = torch.randint(0, 6, (8,))
    expected = (margin_calibrated_ce(logits, y, 2.0, 4)
                + 0.7 * focal_distillation(logits, old, y, 1.0, 5.0, "lm", 5.0)
                + 1.3 * focal_distillation(logits, phi, y, 1.0, 5.0, "lm", 5.0))
    assert torch.allclose(mpt_loss(logits, y, old, phi, 2.0, 0.7, 1.3, 1.0, 5.0, "lm", 5.0), expected)


def test_hparams_schema():
    hp = MPT().resolve({})
    assert hp == {"k": 4.0, "lambda_old": 1.0, "lambda_new": 1.0, "alpha": 1.0, "beta": 5.0,
                  "distance": "kl", "tau": 5.0, "tau_squared": False, "init": "scratch"}
    assert MPT.needs == (PhiNew,)
    with pytest.raises(UsageError):
        MPT().resolve({"k": 21})


def _context(num_old: int, num_classes: int, n: int = 64):
    """D_update of learnable 1x8x8 blobs, M1 on the old-class samples, φ_new CE-trained from
    scratch on all of D_update. Records every model `new_model` builds."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % num_classes
    x = torch.randn(num_classes, 1, 8, 8, generator=g)[y] + 0.5 * torch.randn(n, 1, 8, 8, generator=g)
    recipe = TrainRecipe(epochs=4, batch_size=16, lr=0.05)
    old = build_model("small", num_old, (1, 8, 8))
    fit(old, x[y < num_old], y[y < num_old], recipe, seed=1)
    phi = build_model("small", num_classes, (1, 8, 8))
    fit(phi, x, y, recipe, seed=2)
    built = []

    def new_model(init):
        model = build_model("small", num_classes, (1, 8, 8))
        built.append(expand_outputs(old, model, num_old) if init == "old" else model)
        return built[-1]

    ctx = UpdateContext(x, y, num_old, num_classes, old.eval(), new_model, recipe, 0, torch.device("cpu"),
                        references={PhiNew: phi.eval()})
    return ctx, built


def test_bias_is_inside_the_loss_only_and_model_forward_is_plain():
    ctx, built = _context(3, 5)
    method = MPT()
    hp = method.resolve({"k": 4})
    loss_fn = method.make_loss(ctx, hp)
    model = ctx.new_model("scratch")
    idx = torch.arange(10)
    logits = model(ctx.x_update[idx])
    snapshot = logits.detach().clone()
    batch = Batch(ctx.x_update[idx], ctx.y_update[idx], idx, False)
    loss = loss_fn(logits, batch)
    assert torch.equal(logits.detach(), snapshot)  # loss_fn never shifts the model's logits
    with torch.no_grad():
        phi_logits = ctx.reference(PhiNew)(ctx.x_update[idx])
    expected = mpt_loss(snapshot, batch.y, ctx.old_logits()[idx], phi_logits, *[hp[k] for k in (
        "k", "lambda_old", "lambda_new", "alpha", "beta", "distance", "tau", "tau_squared")])
    assert torch.allclose(loss, expected, atol=1e-6)
    # The trained M2 is the very model new_model built: no wrapper, no hooks, so inference
    # sees the raw logits.
    result = method.update(ctx, hp)
    assert result.model is built[-1] and type(result.model) is type(model)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in result.model.modules())
    assert result.info == {"mpt_bias_active": True}
    losses = result.fit.epoch_losses
    assert len(losses) == 4 and losses[-1] < losses[0]


def test_same_classes_runs_as_double_source_fd_and_says_so():
    ctx, _ = _context(4, 4)
    method = MPT()
    result = method.update(ctx, method.resolve({"distance": "lm", "init": "old"}))
    assert result.info["mpt_note"] == NO_NEW_CLASSES_NOTE
    assert result.info["mpt_bias_active"] is False
    assert result.fit.epoch_losses[-1] < result.fit.epoch_losses[0]


def test_zero_k_with_new_classes_is_noted():
    ctx, _ = _context(3, 5)
    ctx.recipe = TrainRecipe(epochs=1, batch_size=32, lr=0.05)
    result = MPT().update(ctx, MPT().resolve({"k": 0}))
    assert result.info["mpt_bias_active"] is False and "k = 0" in result.info["mpt_note"]


def test_phi_new_with_wrong_class_count_is_refused():
    ctx, _ = _context(3, 5)
    wrong = build_model("small", 3, (1, 8, 8)).eval()
    ctx.reference = lambda kind: wrong
    with pytest.raises(FlipsearchError, match="phi_new has 3 outputs"):
        MPT().make_loss(ctx, MPT().resolve({}))
