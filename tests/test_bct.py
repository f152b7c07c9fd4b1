"""Backward-compatibility training (`bct`): agreement with BCML 1.4.2, scaling, strict imitation."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from flipsearch.errors import UsageError
from flipsearch.methods._base import UpdateContext
from flipsearch.methods.bct import BCT, bct_loss
from flipsearch.models import build_model, expand_outputs
from flipsearch.train import TrainRecipe, fit


class FixedLogits(nn.Module):
    """A BCML-style model over fixed logits: input row i is the float index i of a sample;
    returns (logits, softmax, log_softmax) like BCML's models."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits

    def forward(self, x):
        z = self.logits[x.long().view(-1)]
        return z, F.softmax(z, dim=1), F.log_softmax(z, dim=1)


def _bcml():
    """BCML 1.4.2's loss module, the oracle (scripts/test.sh installs it with --no-deps)."""
    try:
        import backwardcompatibilityml.loss as bcml
    except ImportError as e:
        pytest.fail(f"BCML is not installed ({e}): pip install --no-deps backwardcompatibilityml==1.4.2, "
                    "as scripts/test.sh does", pytrace=False)
    return bcml


def _case(seed: int, n: int, c: int, support: str):
    g = torch.Generator().manual_seed(seed)
    old = torch.randn(n, c, generator=g) * 2
    new = torch.randn(n, c, generator=g) * 2
    pred = old.argmax(1)
    if support == "empty":
        y = (pred + 1) % c
    elif support == "all":
        y = pred
    else:
        y = torch.where(torch.rand(n, generator=g) < 0.5, pred, torch.randint(0, c, (n,), generator=g))
    return new, old, y


@pytest.mark.parametrize("support", ["empty", "all", "mixed"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_new_error_agrees_with_bcml(support, reduction):
    bcml = _bcml()
    for seed in range(4):
        n, c = 5 + 3 * seed, 3 + seed
        new, old, y = _case(seed, n, c, support)
        x = torch.arange(n, dtype=torch.float32)[:, None]
        for lam in (0.0, 0.25, 1.0, 7.5):
            oracle = bcml.BCCrossEntropyLoss(FixedLogits(old), FixedLogits(new), lam)(x, y, reduction=reduction)
            ours = bct_loss(new, old, y, lam, "new-error", "support", reduction=reduction)
            assert torch.allclose(ours, torch.as_tensor(oracle), rtol=1e-5, atol=1e-6), (seed, lam)


def test_bcml_strict_imitation_ce_is_new_error_but_ours_imitates():
    """Issue #115: BCML 1.4.2's SI cross-entropy targets argmax M1 = y on S, so it equals NE."""
    bcml = _bcml()
    new, old, y = _case(7, 12, 4, "mixed")
    x = torch.arange(12, dtype=torch.float32)[:, None]
    si_bcml = bcml.StrictImitationCrossEntropyLoss(FixedLogits(old), FixedLogits(new), 1.0)(x, y)
    assert torch.allclose(si_bcml, bct_loss(new, old, y, 1.0, "new-error"))
    assert not torch.allclose(si_bcml, bct_loss(new, old, y, 1.0, "strict-imitation"))


def _dissonance(new, old, y, variant, scale="support"):
    return bct_loss(new, old, y, 1.0, variant, scale) - bct_loss(new, old, y, 0.0)


def test_empty_support_gives_zero_dissonance_and_lambda_zero_is_ce():
    new, old, y = _case(1, 9, 4, "empty")
    for variant in ("new-error", "strict-imitation"):
        assert bct_loss(new, old, y, 3.0, variant) == F.cross_entropy(new, y)
    new, old, y = _case(2, 9, 4, "mixed")
    assert torch.equal(bct_loss(new, old, y, 0.0, "strict-imitation"), F.cross_entropy(new, y))


def test_new_error_dissonance_by_hand():
    old = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
    new = torch.tensor([[0.0, 1.0], [3.0, 0.0], [1.0, 1.0]])
    y = torch.tensor([0, 1, 1])  # S = {0, 1}
    per = F.cross_entropy(new, y, reduction="none")
    assert torch.allclose(_dissonance(new, old, y, "new-error"), (per[0] + per[1]) / 2)


def test_strict_imitation_is_a_real_imitation():
    new, old, y = _case(3, 10, 4, "mixed")
    in_s = old.argmax(1) == y
    assert 0 < in_s.sum() < 10
    # M2 equals M1 on S (anything elsewhere) -> no dissonance; extra (new-class) logits are ignored.
    imitating = torch.where(in_s[:, None], old, new)
    imitating = torch.cat([imitating, torch.randn(10, 2) * 5], dim=1)
    assert torch.allclose(_dissonance(imitating, old, y, "strict-imitation"), torch.tensor(0.0), atol=1e-6)
    # Otherwise positive, and equal to the mean over S of KL(p_M1 ‖ p_M2) by hand.
    p_old, p_new = F.softmax(old, 1), F.softmax(new, 1)
    kl = (p_old * (p_old.log() - p_new.log())).sum(1)
    got = _dissonance(new, old, y, "strict-imitation")
    assert got > 0 and torch.allclose(got, kl[in_s].mean(), atol=1e-6)


@pytest.mark.parametrize("variant", ["new-error", "strict-imitation"])
def test_batch_scale_is_support_scale_times_support_fraction(variant):
    for seed, support in ((4, "mixed"), (5, "all"), (6, "empty")):
        new, old, y = _case(seed, 11, 5, support)
        frac = (old.argmax(1) == y).sum() / len(y)
        assert torch.allclose(_dissonance(new, old, y, variant, "batch"),
                              _dissonance(new, old, y, variant, "support") * frac, atol=1e-6)


def test_teacher_is_detached():
    new, old, y = _case(8, 6, 3, "mixed")
    old.requires_grad_(True)
    new.requires_grad_(True)
    bct_loss(new, old, y, 1.0, "strict-imitation").backward()
    assert old.grad is None and new.grad.abs().sum() > 0


def test_hparams_schema():
    hp = BCT().resolve({})
    assert hp == {"lambda_c": 1.0, "variant": "new-error", "dissonance_scale": "support", "init": "old"}
    assert BCT().resolve({"lambda_c": 50})["lambda_c"] == 50
    for bad in ({"lambda_c": -0.1}, {"lambda_c": 101}, {"variant": "si"}, {"dissonance_scale": "none"}):
        with pytest.raises(UsageError):
            BCT().resolve(bad)


class CountingModel(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x):
        self.calls += 1
        return self.inner(x)


@pytest.mark.parametrize("variant,num_old,num_classes", [("new-error", 4, 4), ("strict-imitation", 3, 5)])
def test_make_loss_trains_inside_fit_without_rerunning_m1(variant, num_old, num_classes):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(64) % num_classes
    x = torch.randn(num_classes, 1, 8, 8, generator=g)[y] + 0.5 * torch.randn(64, 1, 8, 8, generator=g)
    recipe = TrainRecipe(epochs=4, batch_size=16, lr=0.05)
    inner = build_model("small", num_old, (1, 8, 8))
    fit(inner, x[y < num_old], y[y < num_old], recipe, seed=1)
    old = CountingModel(inner).eval()

    def new_model(init):
        model = build_model("small", num_classes, (1, 8, 8))
        return expand_outputs(inner, model, num_old) if init == "old" else model

    ctx = UpdateContext(x, y, num_old, num_classes, old, new_model, recipe, 0, torch.device("cpu"))
    ctx.old_logits()
    calls = old.calls
    method = BCT()
    result = method.update(ctx, method.resolve({"variant": variant, "lambda_c": 0.5}))
    assert old.calls == calls  # un-augmented training reads M1's cached logits
    losses = result.fit.epoch_losses
    assert len(losses) == 4 and losses[-1] < losses[0]
