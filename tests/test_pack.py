"""Packed training (`flipsearch.pack.fit_pack`): every member equals the same configuration
trained alone with `train.fit` — per method loss, optimiser, schedule, clipping, BatchNorm
and dropout, loss scaling — and divergence or an early stop touches only its own member."""

from __future__ import annotations

import copy

import pytest
import torch

from flipsearch.references import PhiNew
from torch import nn

from flipsearch import pack as packmod
from flipsearch import train as trainmod
from flipsearch.data import load_dataset
from flipsearch.errors import DivergedError, UsageError
from flipsearch.methods import get_method
from flipsearch.methods._base import UpdateContext
from flipsearch.models import build_model, expand_outputs
from flipsearch.pack import PackMemberResult, fit_pack, pack_key
from flipsearch.train import TrainRecipe, cross_entropy, fit, predict_logits

ATOL = 1e-5
N_UPDATE = 192  # 3 batches of 64 per epoch: fast, but every step kind (first, later, last) runs


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _assert_same_model(packed: nn.Module, solo: nn.Module, x_test: torch.Tensor, atol: float = ATOL):
    sp, ss = packed.state_dict(), solo.state_dict()
    assert sp.keys() == ss.keys()
    for name in sp:
        if sp[name].is_floating_point():
            torch.testing.assert_close(sp[name], ss[name], atol=atol, rtol=0, msg=lambda m: f"{name}: {m}")
        else:
            assert torch.equal(sp[name], ss[name]), name
    assert not packed.training  # left in eval mode, as fit leaves it
    assert torch.equal(predict_logits(packed, x_test).argmax(1), predict_logits(solo, x_test).argmax(1))


def _assert_same_losses(packed: list[float], solo: list[float], rel: float = 1e-5):
    assert len(packed) == len(solo)
    assert packed == pytest.approx(solo, rel=rel, abs=1e-6)


class _Scenario:
    """An update scenario on digits: a quickly trained M1 (`num_old` outputs, trained on
    those classes only), D_update with every class, and φ_new for MPT."""

    def __init__(self, ds, num_old: int):
        torch.manual_seed(0)
        self.num_old, self.num_classes = num_old, ds.num_classes
        pool_x, pool_y = ds.x_train[N_UPDATE:], ds.y_train[N_UPDATE:]
        keep = pool_y < num_old
        self.old = build_model("small", num_old, ds.input_shape, seed=11)
        fit(self.old, pool_x[keep][:512], pool_y[keep][:512], TrainRecipe(epochs=3, batch_size=64), seed=1)
        self.x, self.y = ds.x_train[:N_UPDATE], ds.y_train[:N_UPDATE]
        self.x_test = ds.x_test
        self.input_shape = ds.input_shape
        self.phi = build_model("small", self.num_classes, ds.input_shape, seed=12)
        fit(self.phi, self.x, self.y, TrainRecipe(epochs=2, batch_size=64), seed=2)
        self.phi.eval()

    def new_model(self, init: str) -> nn.Module:
        if init == "old":
            fresh = build_model("small", self.num_classes, self.input_shape, seed=13)
            return expand_outputs(self.old, fresh, self.num_old)
        return build_model("small", self.num_classes, self.input_shape, seed=14)

    def context(self, recipe: TrainRecipe, seed: int = 5) -> UpdateContext:
        return UpdateContext(self.x, self.y, self.num_old, self.num_classes, self.old, self.new_model, recipe, seed,
                             torch.device("cpu"), references={PhiNew: self.phi})


@pytest.fixture(scope="module")
def scenario(digits):
    return _Scenario(digits, 10)


@pytest.fixture(scope="module")
def incremental(digits):
    return _Scenario(digits, 7)  # 3 new classes: MPT's margin k acts


BASE = TrainRecipe(epochs=2, batch_size=64, lr=0.05, momentum=0.9, weight_decay=5e-4)
# three members' own optimiser settings
SETTINGS = [dict(lr=0.05, weight_decay=5e-4), dict(lr=0.02, weight_decay=0.0), dict(lr=0.1, weight_decay=2e-3)]

METHOD_CASES = {
    "ce": ("ce", [{}, {"init": "scratch"}, {}]),
    "bct-new-error": ("bct", [{"lambda_c": 0.5}, {"lambda_c": 2.0}, {"lambda_c": 0.0}]),
    "bct-strict-imitation": ("bct", [{"variant": "strict-imitation", "lambda_c": 1.0},
                                     {"variant": "strict-imitation", "lambda_c": 3.0,
                                      "dissonance_scale": "batch"},
                                     {"variant": "strict-imitation", "lambda_c": 0.25}]),
    "fd-lm": ("fd", [{"distance": "lm", "lambda": 1.0, "beta": 5.0}, {"distance": "lm", "lambda": 0.4, "alpha": 0.5},
                     {"distance": "lm", "lambda": 3.0, "beta": 0.0}]),
    "fd-kl": ("fd", [{"distance": "kl", "tau": 5.0}, {"distance": "kl", "tau": 100.0, "tau_squared": True},
                     {"distance": "kl", "lambda": 0.2, "tau": 1.0}]),
    "mpt": ("mpt", [{"k": 4.0}, {"k": 1.0, "lambda_old": 0.5, "distance": "lm"}, {"k": 0.0, "lambda_new": 2.0}]),
}


def _pack_and_solo(sc: _Scenario, method_name: str, hps: list[dict], recipes: list[TrainRecipe], **pack_kw):
    """Train the configurations as one pack and each alone with `LossMethod.update`;
    losses and models are built exactly as `LossMethod.update` builds them."""
    method = get_method(method_name)
    models, losses = [], []
    for hp, recipe in zip(hps, recipes):
        ctx = sc.context(recipe)
        hp = method.resolve(hp)
        models.append(method.initial_model(ctx, hp))
        losses.append(method.make_loss(ctx, hp))
    results = fit_pack(models, sc.x, sc.y, recipes, seed=5, loss_fns=losses, **pack_kw)
    solos = [method.update(sc.context(recipe), method.resolve(hp)) for hp, recipe in zip(hps, recipes)]
    return models, results, solos


@pytest.mark.parametrize("case", list(METHOD_CASES))
def test_each_method_pack_equals_solo_runs(case, scenario, incremental):
    method_name, hps = METHOD_CASES[case]
    sc = incremental if method_name == "mpt" else scenario
    recipes = [BASE.with_overrides(**s) for s in SETTINGS]
    models, results, solos = _pack_and_solo(sc, method_name, hps, recipes)
    for model, res, solo in zip(models, results, solos):
        assert res.status == "finished" and res.epochs == 2
        _assert_same_losses(res.epoch_losses, solo.fit.epoch_losses)
        _assert_same_model(model, solo.model, sc.x_test)
    # the members really differ: different hyperparameters give different models
    assert not torch.allclose(models[0].head[-1].weight, models[1].head[-1].weight)


@pytest.mark.parametrize("engine", ["grouped", "vmap"])
@pytest.mark.parametrize("method_name,hps", [("ce", [{}, {}, {}]), METHOD_CASES["fd-kl"]])
def test_both_engines_equal_solo(engine, method_name, hps, scenario):
    recipes = [BASE.with_overrides(**s) for s in SETTINGS]
    models, results, solos = _pack_and_solo(scenario, method_name, hps, recipes, engine=engine)
    for model, res, solo in zip(models, results, solos):
        # fd-kl's second member (tau = 100 with tau²) has an ill-conditioned loss *value*:
        # 10^4 × KL of two nearly equal distributions, so vmap's ~1e-7 logit rounding moves
        # it by ~1e-4 relative while the weights still agree to ~1e-7.
        _assert_same_losses(res.epoch_losses, solo.fit.epoch_losses, rel=5e-4)
        _assert_same_model(model, solo.model, scenario.x_test)


def _adamw(model, recipe):
    params = [p for p in model.parameters() if p.requires_grad]
    if recipe.optimizer == "adam":
        return torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)


@pytest.mark.parametrize("adam_is", ["AdamW", "Adam"])
def test_adam_members_equal_solo(adam_is, scenario, monkeypatch):
    """`optimizer: adam` packs follow whichever Adam `train.make_optimizer` builds: AdamW
    (decoupled weight decay, where the project is going) or Adam (coupled)."""
    if adam_is == "AdamW":
        monkeypatch.setattr(trainmod, "make_optimizer", _adamw)
        monkeypatch.setattr(packmod, "make_optimizer", _adamw)
    settings = [dict(lr=1e-3, weight_decay=1e-2), dict(lr=3e-3, weight_decay=0.0), dict(lr=5e-4, weight_decay=0.1)]
    recipes = [BASE.with_overrides(optimizer="adam", **s) for s in settings]
    models, results, solos = _pack_and_solo(scenario, "fd", [{}, {"lambda": 2.0}, {"beta": 1.0}], recipes)
    for model, res, solo in zip(models, results, solos):
        _assert_same_losses(res.epoch_losses, solo.fit.epoch_losses)
        _assert_same_model(model, solo.model, scenario.x_test)


def test_packed_adamw_step_is_torch_adamw():
    """The stacked AdamW update against torch.optim.AdamW itself, member by member, over
    steps with different lr and weight decay per member."""
    g = torch.Generator().manual_seed(0)
    lrs, wds = [1e-3, 1e-2, 3e-4], [0.0, 0.01, 0.5]
    p0 = torch.randn(3, 4, 5, generator=g)
    grads = [torch.randn(3, 4, 5, generator=g) for _ in range(6)]
    settings = [packmod._OptSettings("adamw", [lr] * 6, wd, 0.0) for lr, wd in zip(lrs, wds)]
    opt = packmod._PackOptimizer(settings, ["w"], torch.device("cpu"))
    stacked = p0.clone()
    for t, grad in enumerate(grads):
        opt.step([stacked], [grad.clone()], t)
    for k in range(3):
        p = nn.Parameter(p0[k].clone())
        ref = torch.optim.AdamW([p], lr=lrs[k], weight_decay=wds[k])
        for grad in grads:
            p.grad = grad[k].clone()
            ref.step()
        torch.testing.assert_close(stacked[k], p.detach(), atol=1e-6, rtol=1e-6)


def test_cosine_schedule_and_grad_clip_per_member(scenario):
    """Members with and without a cosine schedule and with their own clipping thresholds
    (one large enough never to act, one tight, one off) share a pack."""
    settings = [dict(lr=0.2, schedule="cosine", grad_clip=0.5), dict(lr=0.05, schedule="none", grad_clip=0.0),
                dict(lr=0.1, schedule="cosine", grad_clip=100.0, momentum=0.0)]
    recipes = [BASE.with_overrides(**s) for s in settings]
    models, results, solos = _pack_and_solo(scenario, "bct", [{}, {"lambda_c": 1.5}, {}], recipes)
    for model, res, solo in zip(models, results, solos):
        _assert_same_losses(res.epoch_losses, solo.fit.epoch_losses)
        _assert_same_model(model, solo.model, scenario.x_test)


def test_diverging_member_leaves_and_the_others_equal_solo(scenario):
    recipes = [BASE.with_overrides(epochs=3, **s) for s in SETTINGS]
    recipes[1] = recipes[1].with_overrides(lr=1e6)
    method = get_method("ce")
    models = [method.initial_model(scenario.context(r), {"init": "old"}) for r in recipes]
    results = fit_pack(models, scenario.x, scenario.y, recipes, seed=5, loss_fns=[cross_entropy] * 3)
    bad = results[1]
    assert bad.status == "diverged" and bad.diverged
    with pytest.raises(DivergedError) as solo_error:
        fit(method.initial_model(scenario.context(recipes[1]), {"init": "old"}), scenario.x, scenario.y, recipes[1],
            seed=5)
    assert bad.error == str(solo_error.value)
    assert bad.epochs == int(bad.error.rsplit(" ", 1)[1]) and len(bad.epoch_losses) == bad.epochs - 1
    with pytest.raises(DivergedError):
        bad.fit_result()
    for i in (0, 2):
        solo = method.update(scenario.context(recipes[i]), method.resolve({}))
        assert results[i].status == "finished" and results[i].epochs == 3
        _assert_same_losses(results[i].epoch_losses, solo.fit.epoch_losses)
        _assert_same_model(models[i], solo.model, scenario.x_test)


def test_on_epoch_stops_a_member_with_its_state_at_that_epoch(scenario):
    """Member 1 is stopped after epoch 1 of 3: it holds the weights of a 1-epoch run (no
    schedule, so epoch 1 is the same in both); the others, in the shrunk pack, equal solo."""
    recipes = [BASE.with_overrides(epochs=3, **s) for s in SETTINGS]
    method = get_method("fd")
    hps = [method.resolve({"lambda": lam}) for lam in (0.5, 1.0, 2.0)]
    seen: list[tuple[int, dict]] = []

    def on_epoch(epoch, losses):
        seen.append((epoch, dict(losses)))
        return {1} if epoch == 1 else set()

    models = [method.initial_model(scenario.context(r), hp) for r, hp in zip(recipes, hps)]
    losses = [method.make_loss(scenario.context(r), hp) for r, hp in zip(recipes, hps)]
    results = fit_pack(models, scenario.x, scenario.y, recipes, seed=5, loss_fns=losses, on_epoch=on_epoch,
                       keep_history=2)
    assert [e for e, _ in seen] == [1, 2, 3]
    assert set(seen[0][1]) == {0, 1, 2} and set(seen[1][1]) == {0, 2}
    assert results[1].status == "stopped" and results[1].epochs == 1
    assert [r.status for r in (results[0], results[2])] == ["finished", "finished"]
    one_epoch = method.update(scenario.context(recipes[1].with_overrides(epochs=1)), hps[1])
    _assert_same_losses(results[1].epoch_losses, one_epoch.fit.epoch_losses)
    _assert_same_model(models[1], one_epoch.model, scenario.x_test)
    for i in (0, 2):
        ctx = scenario.context(recipes[i])
        solo_model = method.initial_model(ctx, hps[i])
        solo = ctx.fit(solo_model, method.make_loss(ctx, hps[i]), keep_history=2)
        _assert_same_losses(results[i].epoch_losses, solo.epoch_losses)
        assert seen[2][1][i] == results[i].epoch_losses[-1]
        _assert_same_model(models[i], solo_model, scenario.x_test)
        # NeuRecover's history: the last two epochs' weights, as fit keeps them
        assert len(results[i].history) == 2
        for h_pack, h_solo in zip(results[i].history, solo.history):
            assert h_pack.keys() == h_solo.keys()
            for name in h_pack:
                assert h_pack[name].device.type == "cpu"
                torch.testing.assert_close(h_pack[name], h_solo[name], atol=ATOL, rtol=0)
        assert results[i].fit_result().epoch_losses == results[i].epoch_losses


def test_on_epoch_sees_each_members_weights_of_that_epoch(scenario):
    """What an early-stopping hook evaluates (`run_pack` scores members on validation in
    on_epoch) is the member after that epoch: its logits equal the solo run's after the same
    epoch, read in train.fit's epoch_end."""
    recipes = [BASE.with_overrides(epochs=3, **s) for s in SETTINGS[:2]]
    method = get_method("fd")
    hps = [method.resolve({"lambda": lam}) for lam in (0.5, 2.0)]
    models = [method.initial_model(scenario.context(r), hp) for r, hp in zip(recipes, hps)]
    packed: dict[tuple[int, int], torch.Tensor] = {}

    def on_epoch(epoch, losses):
        for i in losses:
            packed[(i, epoch)] = predict_logits(models[i], scenario.x_test)
        return set()

    fit_pack(models, scenario.x, scenario.y, recipes, seed=5, on_epoch=on_epoch,
             loss_fns=[method.make_loss(scenario.context(r), hp) for r, hp in zip(recipes, hps)])
    for i, (recipe, hp) in enumerate(zip(recipes, hps)):
        ctx = scenario.context(recipe)
        solo_model = method.initial_model(ctx, hp)
        solo: dict[int, torch.Tensor] = {}
        fit(solo_model, scenario.x, scenario.y, recipe, seed=5, loss_fn=method.make_loss(ctx, hp),
            epoch_end=lambda e, loss, m: solo.__setitem__(e, predict_logits(m, scenario.x_test)) or False)
        for epoch in (1, 2, 3):
            torch.testing.assert_close(packed[(i, epoch)], solo[epoch], atol=1e-4, rtol=0)
        assert not torch.equal(packed[(i, 1)], packed[(i, 3)])  # the weights moved between epochs


@pytest.mark.parametrize("engine,atol", [("grouped", ATOL), ("vmap", 1e-3)])
def test_cnn8_batchnorm_and_dropout_equal_solo(engine, atol):
    """cnn8 (BatchNorm2d in train mode, Dropout in its head) on tiny 28x28 data (noisy
    copies of ten random templates): weights, running statistics and batch counters equal
    solo runs.

    The grouped engine runs the kernels a solo run runs, per channel, in the same layout: it
    agrees to ~1e-7. vmap's batching rules (BatchNorm and convolution over moved dims) round
    differently (logits differ by ~1e-6 at identical weights), and cnn8's training on such
    data amplifies rounding within a few steps: the solo loop itself, started from weights
    perturbed by 3e-8, changed a gradient by 1e-3 relative on one such data seed.
    So vmap is checked at 1e-3 — still far below what a wrong lr, weight decay, mask or
    running-statistic update would leave (>= 1e-2)."""
    g = torch.Generator().manual_seed(3)
    y = torch.randint(0, 10, (32,), generator=g)
    x = torch.randn(10, 1, 28, 28, generator=g)[y] + 0.5 * torch.randn(32, 1, 28, 28, generator=g)
    base = TrainRecipe(epochs=2, batch_size=16, lr=0.05)
    recipes = [base, base.with_overrides(lr=0.01, weight_decay=0.0, schedule="cosine"),
               base.with_overrides(lr=0.1, grad_clip=1.0)]
    models = [build_model("cnn8", 10, (1, 28, 28), seed=s) for s in (1, 2, 1)]
    solos = [copy.deepcopy(m) for m in models]
    results = fit_pack(models, x, y, recipes, seed=9, loss_fns=[cross_entropy] * 3, engine=engine)
    for model, solo, recipe, res in zip(models, solos, recipes, results):
        solo_fit = fit(solo, x, y, recipe, seed=9)
        _assert_same_losses(res.epoch_losses, solo_fit.epoch_losses, rel=max(1e-5, atol))
        _assert_same_model(model, solo, x, atol=atol)
        assert int(model.features[1].num_batches_tracked) == 4
        assert not torch.equal(model.features[1].running_mean, torch.zeros(32))


def _fit_with_grad_scaler(model, x, y, recipe, seed, loss_fn):
    """`fit`'s AMP branch with torch's own GradScaler on the CPU (no autocast), as reference."""
    gen = trainmod.seed_everything(seed)
    model.train()
    opt = trainmod.make_optimizer(model, recipe)
    scaler = torch.amp.GradScaler("cpu")
    for _ in range(recipe.epochs):
        for batch in trainmod.epoch_batches(x, y, recipe, gen):
            loss = loss_fn(model(batch.x), batch)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
    model.eval()
    return scaler.get_scale()


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_loss_scaling_skips_only_the_member_with_inf_gradients(optimizer, scenario):
    """The AMP path's per-member GradScaler, run on the CPU without autocast: member 1's
    first two steps overflow (its loss is scaled by 2^120), so GradScaler skips them and
    backs its scale off twice; the other members never skip and equal plain solo runs
    (power-of-two scaling is exact)."""

    def overflowing_twice():
        calls = []

        def loss_fn(logits, batch):
            calls.append(1)
            loss = cross_entropy(logits, batch)
            return loss * 2.0 ** 120 if len(calls) <= 2 else loss

        return loss_fn

    lr = 1e-3 if optimizer == "adam" else 0.05
    recipes = [BASE.with_overrides(optimizer=optimizer, lr=lr * f) for f in (1.0, 2.0, 0.5)]
    models = [scenario.new_model("old") for _ in recipes]
    solos = [copy.deepcopy(m) for m in models]
    fit_pack(models, scenario.x, scenario.y, recipes, seed=5,
             loss_fns=[cross_entropy, overflowing_twice(), cross_entropy], _force_loss_scaling=True)
    scale = _fit_with_grad_scaler(solos[1], scenario.x, scenario.y, recipes[1], 5, overflowing_twice())
    assert scale == 2.0 ** 14
    _assert_same_model(models[1], solos[1], scenario.x_test)
    for i in (0, 2):
        fit(solos[i], scenario.x, scenario.y, recipes[i], seed=5)
        _assert_same_model(models[i], solos[i], scenario.x_test)


def test_pack_rules_are_checked(scenario):
    m = [scenario.new_model("old") for _ in range(2)]
    with pytest.raises(UsageError, match="batch_size"):
        fit_pack(m, scenario.x, scenario.y, [BASE, BASE.with_overrides(batch_size=32)], seed=0,
                 loss_fns=[cross_entropy] * 2)
    with pytest.raises(UsageError, match="optimizer"):
        fit_pack(m, scenario.x, scenario.y, [BASE, BASE.with_overrides(optimizer="adam")], seed=0,
                 loss_fns=[cross_entropy] * 2)
    other = build_model("cnn8", 10, scenario.input_shape, seed=0)
    with pytest.raises(UsageError, match="architecture"):
        fit_pack([m[0], other], scenario.x, scenario.y, [BASE, BASE], seed=0, loss_fns=[cross_entropy] * 2)
    with pytest.raises(UsageError, match="one recipe and one loss"):
        fit_pack(m, scenario.x, scenario.y, [BASE], seed=0, loss_fns=[cross_entropy] * 2)
    assert pack_key(BASE) == pack_key(BASE.with_overrides(lr=1.0, weight_decay=0.0, schedule="cosine",
                                                          grad_clip=2.0, momentum=0.5))
    assert pack_key(BASE) != pack_key(BASE.with_overrides(epochs=3))


def test_grouped_engine_refuses_models_it_cannot_pack_and_auto_falls_back(scenario):
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.fc = nn.Linear(4 * 64, 10)

        def forward(self, x):
            return self.fc((self.conv(x) + x).flatten(1))

    torch.manual_seed(0)
    models = [Residual() for _ in range(2)]
    solos = [copy.deepcopy(m) for m in models]
    with pytest.raises(UsageError, match="grouped"):
        fit_pack(models, scenario.x, scenario.y, [BASE, BASE], seed=0, loss_fns=[cross_entropy] * 2,
                 engine="grouped")
    recipes = [BASE, BASE.with_overrides(lr=0.01)]
    fit_pack(models, scenario.x, scenario.y, recipes, seed=0, loss_fns=[cross_entropy] * 2)  # auto: vmap
    for model, solo, recipe in zip(models, solos, recipes):
        fit(solo, scenario.x, scenario.y, recipe, seed=0)
        _assert_same_model(model, solo, scenario.x_test)


def test_member_result_is_a_fit_result():
    r = PackMemberResult("finished", 2, [1.0, 0.5], [], 3.0)
    fr = r.fit_result()
    assert (fr.epoch_losses, fr.seconds) == ([1.0, 0.5], 3.0)


def test_adaptive_pool_shortcut_only_where_bit_identical():
    """The grouped engine runs AdaptiveAvgPool2d as avg_pool2d only where the two agree bit
    for bit (small's 8x8 -> 4x4 is such a case), and leaves the global RNG alone."""
    from flipsearch.pack import _even_pool

    z = torch.zeros(2, 3, 8, 8)
    state = torch.random.get_rng_state()
    assert _even_pool(z, (4, 4)) == (2, 2)
    assert torch.equal(state, torch.random.get_rng_state())
    assert _even_pool(torch.zeros(2, 3, 9, 9), 3) is None  # area 9: the division rounds differently
    assert _even_pool(torch.zeros(2, 3, 16, 16), (1, 1)) is None  # global pooling reduces differently
    assert _even_pool(torch.zeros(2, 3, 10, 10), (4, 4)) is None  # overlapping windows
    x = torch.randn(4, 6, 8, 8)
    assert torch.equal(torch.nn.functional.avg_pool2d(x, _even_pool(x, (4, 4))),
                       torch.nn.functional.adaptive_avg_pool2d(x, (4, 4)))
