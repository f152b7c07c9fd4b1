"""NeuRecover: hand-made localisation and fitness, vectorised evaluation against a loop, the
searches, and a real repair on the embedded digits (M1 -> CE update -> repair)."""

import copy
import math
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from flipsearch.data.embedded import load_digits_dataset
from flipsearch.errors import UsageError
from flipsearch.methods import get_method
from flipsearch.methods.neurecover import swarm as _swarm
from flipsearch.methods.neurecover.reference import CEUpdateRef
from flipsearch.references import DerivedCache
from flipsearch.methods import neurecover as nr
from flipsearch.methods._base import UpdateContext
from flipsearch.models import build_model
from flipsearch.train import TrainRecipe, fit, predict_logits


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models train faster on one thread, and far faster when other processes load the
    machine (intra-op workers then wait on each other at every small op)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _linear(weight, bias=None):
    w = torch.as_tensor(weight, dtype=torch.float32)
    layer = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(w)
        if bias is not None:
            layer.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
    return layer


def _pairs(loc):
    return {(t.name, int(r), int(c)) for t in loc.targets for r, c in zip(t.rows, t.cols)}


# --------------------------------------------------------------------------- localisation

# One Linear, 2 outputs x 4 inputs. For the sum of the logits, the gradient of w_ji is
# Σ_x a_i(x) (the same for both rows); FI(w_ji) = |w_ji| · mean|a_i|.
W = [[1.0, 1.0, 1.0, 1.0], [0.9, 0.8, 0.1, 0.1]]
DELTA = torch.tensor([[0.8, 0.7, 0.6, 0.0], [0.9, 0.01, 0.02, 0.03]])
A_DEG = torch.tensor([[4.0, 3.0, 2.0, 1.0]])
A_IMP = torch.tensor([[5.0, 0.1, 4.0, 0.2]])


def test_localisation_intersects_forward_gradient_and_delta():
    layers, names = [_linear(W, [0.0, 0.0])], ["head.0.weight"]
    # No imp samples: susp = Δ share = 1, k = round(8 · 1 · 0.5) = 4.
    #   FI_deg = [[4, 3, 2, 1], [3.6, 2.4, .2, .1]] -> top4 (0,0) (1,0) (0,1) (1,1)
    #   grad   = [[4, 3, 2, 1], [4, 3, 2, 1]]       -> top4 columns 0 and 1
    #   Δ      -> top4 (1,0) (0,0) (0,1) (0,2)
    loc = nr.localise(layers, names, A_DEG, torch.zeros(0, 4), {0: DELTA}, reduction_rate=0.5)
    assert loc.budget == {"head.0.weight": 4}
    assert _pairs(loc) == {("head.0.weight", 0, 0), ("head.0.weight", 1, 0), ("head.0.weight", 0, 1)}


def test_localisation_imp_set_removes_weights():
    layers, names = [_linear(W)], ["head.0.weight"]
    # With imp samples the FI shares are 1 and 1: susp = 1/2 · 1, k = round(8 · 0.5 · 1) = 4.
    # imp: grad top4 = columns 0 and 2; FI_imp = [[5, .1, 4, .2], [4.5, .08, .4, .02]] -> top4
    # (0,0) (1,0) (0,2) (1,2). So (0,0) and (1,0) are removed from the deg choice, (0,1) stays.
    loc = nr.localise(layers, names, A_DEG, A_IMP, {0: DELTA}, reduction_rate=1.0)
    assert loc.budget == {"head.0.weight": 4}
    assert _pairs(loc) == {("head.0.weight", 0, 1)}
    assert loc.total == 1 and loc.counts == {"head.0.weight": 1}


def test_localisation_budget_follows_layer_shares_and_skips_unchanged_layers():
    torch.manual_seed(0)
    layers = [_linear(torch.randn(5, 6)), nn.ReLU(), _linear(torch.randn(3, 5))]
    names = ["head.0.weight", None, "head.2.weight"]
    x = torch.randn(7, 6).abs()
    # Only the last layer moved: Δ share 0 for the first (no budget), 1 for the last.
    deltas = {0: torch.zeros(5, 6), 2: torch.rand(3, 5) + 0.1}
    loc = nr.localise(layers, names, x, torch.zeros(0, 6), deltas, reduction_rate=1.0)
    assert loc.budget["head.0.weight"] == 0 and loc.counts["head.0.weight"] == 0
    assert loc.budget["head.2.weight"] == 15  # 15 weights · susp 1 · rate 1: every weight qualifies
    assert loc.counts["head.2.weight"] == 15
    # No deg samples at all: nothing is localised.
    empty = nr.localise(layers, names, torch.zeros(0, 6), x, deltas, reduction_rate=1.0)
    assert empty.total == 0 and empty.targets == []


# --------------------------------------------------------------------------- fitness


def test_fitness_by_hand():
    y = torch.tensor([0, 1, 1])  # row 0 is I_neg, rows 1-2 are I_pos
    logits = torch.tensor([[[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]],
                           [[0.0, 1.0], [0.0, 1.0], [0.0, 1.0]]])
    alpha = 0.5
    c, d, e, f = (math.log1p(math.exp(-2)), math.log1p(math.exp(2)), math.log1p(math.exp(1)),
                  math.log1p(math.exp(-1)))
    # candidate 0: neg patched (CE c); pos: one intact (CE c), one broken (CE d)
    want0 = (1 / 1 + 1) / (c + 1) + alpha * (1 / 2 + 1) / ((c + d) / 2 + 1)
    # candidate 1: neg still wrong (CE e); both pos intact (CE f)
    want1 = (0 + 1) / (e + 1) + alpha * (2 / 2 + 1) / (f + 1)
    got = nr.fitness(logits, y, n_neg=1, alpha=alpha)
    assert torch.allclose(got.value, torch.tensor([want0, want1]), atol=1e-6)
    assert got.patched.tolist() == [1, 0] and got.intact.tolist() == [1, 2]
    # The CE used agrees with F.cross_entropy.
    assert math.isclose(F.cross_entropy(logits[0, :1], y[:1]).item(), c, rel_tol=1e-6)
    # Without positives the second term is 0.
    only_neg = nr.fitness(logits[:, :1], y[:1], n_neg=1, alpha=alpha)
    assert torch.allclose(only_neg.value, torch.tensor([2 / (c + 1), 1 / (e + 1)]), atol=1e-6)


# --------------------------------------------------------------------------- vectorised evaluation


def _loop_logits(layers, targets, head_in, values):
    """The slow reference: one patched copy of the head per particle."""
    out = []
    for v in values:
        patched = copy.deepcopy(nn.Sequential(*layers))
        start = 0
        with torch.no_grad():
            for t in targets:
                patched[t.pos].weight[t.rows, t.cols] = v[start:start + len(t.rows)]
                start += len(t.rows)
            out.append(patched(head_in.clone()))
    return torch.stack(out)


@pytest.mark.parametrize("edited", [(0, 5), (5,), (3,), (0, 3, 5)])
def test_patched_head_equals_a_loop_over_particles(edited, monkeypatch):
    torch.manual_seed(1)
    layers = [nn.Linear(6, 5), nn.ReLU(inplace=True), nn.Dropout(0.5), nn.Linear(5, 4), nn.Tanh(),
              nn.Linear(4, 3)]
    for m in layers:
        m.eval()
    gen = torch.Generator().manual_seed(0)
    targets = []
    for pos in edited:
        out_f, in_f = layers[pos].weight.shape
        flat = torch.randperm(out_f * in_f, generator=gen)[:4]  # distinct entries, some share a row
        targets.append(nr.Target(pos, f"head.{pos}.weight", flat // in_f, flat % in_f))
    head_in = torch.randn(9, 6)
    k = sum(len(t.rows) for t in targets)
    values = torch.randn(7, k)
    ph = nr.PatchedHead(layers, targets, head_in)
    rows = torch.tensor([3, 0, 8, 8, 1])  # a subset with a repeat, as a positive draw has
    got = ph.logits(values, rows)
    want = _loop_logits(layers, targets, head_in[rows], values)
    assert torch.allclose(got, want, atol=1e-5)
    # The unpatched values reproduce the head itself.
    assert torch.allclose(ph.logits(ph.original[None], rows)[0], nn.Sequential(*layers)(head_in[rows]), atol=1e-5)
    # Fitness computed in particle chunks equals fitness of the whole batch.
    y = torch.tensor([0, 1, 2, 2, 1])
    whole = nr.fitness(want, y, 2, 1.0).value
    import flipsearch.methods.neurecover.evaluate as ev

    monkeypatch.setattr(ev, "EVAL_ELEMENTS", 2 * len(rows) * ph.width)  # 2 particles per chunk
    assert torch.allclose(ph.fitness(values, rows, y, 2, 1.0).value, whole, atol=1e-5)


# --------------------------------------------------------------------------- searches


def _sphere(centre):
    return lambda x: -((x - centre) ** 2).sum(1)


@pytest.mark.parametrize("search", ["pso", "de"])
def test_search_improves_is_seeded_and_stops_on_patience(search):
    centre = torch.tensor([0.3, -0.2, 0.5])

    def run(seed, objective, iterations=60, rescore=False):
        gen = torch.Generator().manual_seed(seed)
        x0 = torch.randn((20, 3), generator=gen)
        if search == "pso":
            return x0, _swarm.pso(objective, x0, torch.full((3,), 0.01), torch.full((3,), 2.0),
                                  iterations=iterations, patience=10, gen=gen, rescore=rescore)
        return x0, _swarm.de(objective, x0, iterations=iterations, patience=10, gen=gen, rescore=rescore)

    x0, res = run(0, _sphere(centre))
    start = float(_sphere(centre)(x0).max())
    assert res.score > start and res.improvements > 0
    assert math.isclose(res.score, float(_sphere(centre)(res.best[None])), rel_tol=1e-6)
    _, again = run(0, _sphere(centre))
    assert torch.equal(res.best, again.best)
    # A flat objective never improves: the search stops after exactly `patience` iterations.
    _, flat = run(0, lambda x: torch.zeros(len(x)), iterations=100)
    assert flat.iterations == 10 and flat.improvements == 0
    # With rescoring (for noisy objectives) the incumbents are scored in the same call.
    calls = []
    run(0, lambda x: calls.append(len(x)) or _sphere(centre)(x), iterations=3, rescore=True)
    assert calls == [20, 40, 40, 40]


def test_pso_velocity_is_clamped_to_its_bounds_literally():
    # Bounds [0.5, 1]: from a swarm on one point (zero pulls, zero velocity) every step
    # still moves each coordinate by exactly 0.5 (the reference's sign for v = 0 is −1).
    seen = []

    def objective(x):
        seen.append(x.clone())
        return torch.zeros(len(x))

    x0 = torch.zeros(4, 2)
    _swarm.pso(objective, x0, torch.full((2,), 0.5), torch.full((2,), 1.0), iterations=1, patience=5,
               gen=torch.Generator().manual_seed(0), rescore=False)
    assert torch.equal(seen[1], torch.full((4, 2), -0.5))


# --------------------------------------------------------------------------- the method on real training


def _ctx(ref, m1, x, y, seed=0, keys=None, cache=None):
    return UpdateContext(x, y, 10, 10, m1, lambda init: None, TrainRecipe(), seed, torch.device("cpu"),
                         references={CEUpdateRef: ref}, reference_keys=keys or {},
                         cache=cache if cache is not None else DerivedCache())


@pytest.fixture(scope="module")
def digits_update():
    """M1 trained on 20 % of the digits pool, M2 = M1 fine-tuned with CE on 2/3 of the
    rest, the other 1/3 being the repair split (about 335 samples)."""
    torch.manual_seed(0)  # build_model draws the initial weights from the global generator
    ds = load_digits_dataset()
    x, y = ds.x_train, ds.y_train
    gen = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(x), generator=gen)
    n1 = len(x) // 5
    m1 = build_model("small", 10, ds.input_shape)
    fit(m1, x[perm[:n1]], y[perm[:n1]], TrainRecipe(epochs=15, batch_size=32), seed=0)
    m1.eval()
    xu, yu = x[perm[n1:]], y[perm[n1:]]
    order = torch.randperm(len(xu), generator=gen)
    repair_idx, train_idx = order[: len(xu) // 3].sort().values, order[len(xu) // 3:].sort().values
    m2 = copy.deepcopy(m1).train()
    res = fit(m2, xu[train_idx], yu[train_idx], TrainRecipe(epochs=5, batch_size=32, lr=0.1), seed=1,
              keep_history=2)
    ref = types.SimpleNamespace(model=m2.eval(), history=res.history, repair_idx=repair_idx, train_idx=train_idx)
    return ref, m1, xu, yu


def test_repair_wins_back_flips_on_the_digits(digits_update):
    ref, m1, xu, yu = digits_update
    before = copy.deepcopy(ref.model.state_dict())
    method = get_method("neurecover")
    assert method.needs == (CEUpdateRef,)
    # Three search seeds (not one lucky one): each wins flips back while it barely touches
    # I_pos, and on average at least half of M2's flips are won back. (Its speed is
    # bench/method_overhead.py's figure, not a timed assert here.)
    runs = [method.update(_ctx(ref, m1, xu, yu, seed=seed), method.resolve({})) for seed in (0, 1, 2)]
    for run in runs:
        info = run.info
        assert info["scope"] == "head" and info["note"] == ""
        assert info["n_neg"] >= 3  # the setting produces flips to win back
        assert 0 < info["localised_total"] <= 40
        assert info["repair_rr_before"] == 0.0 and info["repair_br_before"] == 0.0
        assert info["repair_rr_after"] > 0  # flips won back
        assert info["repair_br_after"] <= 0.05  # and I_pos barely touched (measured: at most 0.016)
        assert info["best_fitness"] > info["fitness_before"]
    assert sum(r.info["repair_rr_after"] for r in runs) / len(runs) >= 0.5
    out, info = runs[0], runs[0].info
    # M2 itself is untouched; the repaired model differs from it only in the chosen weights.
    for k, v in ref.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert out.model is not ref.model
    chosen = {}
    for t in method_targets(out.model, ref.model):
        chosen.setdefault(t[0], []).append(t[1:])
    assert sum(len(v) for v in chosen.values()) <= info["localised_total"]
    assert set(chosen) <= set(k for k, n in info["localised"].items() if n > 0)
    for name, n in info["localised"].items():
        assert len(chosen.get(name, [])) <= n
    # The repaired model's own predictions give the reported repair rate.
    x_rep, y_rep = xu[ref.repair_idx], yu[ref.repair_idx]
    old_ok = predict_logits(m1, x_rep).argmax(1) == y_rep
    new_ok = predict_logits(ref.model, x_rep).argmax(1) == y_rep
    after_ok = predict_logits(out.model, x_rep).argmax(1) == y_rep
    neg = old_ok & ~new_ok
    assert math.isclose(after_ok[neg].float().mean().item(), info["repair_rr_after"], rel_tol=1e-6)


def method_targets(repaired, original):
    """(parameter name, *index) of every entry that differs; buffers must all be equal."""
    diffs = []
    rep_sd, org_sd = repaired.state_dict(), original.state_dict()
    assert rep_sd.keys() == org_sd.keys()
    for k, v in rep_sd.items():
        if not torch.equal(v, org_sd[k]):
            assert k.startswith("head.") and k.endswith(".weight"), f"{k} changed"
            diffs += [(k, *map(int, idx)) for idx in torch.nonzero(v != org_sd[k])]
    return diffs


def test_same_seed_same_repair_and_de_search(digits_update):
    ref, m1, xu, yu = digits_update
    method = get_method("neurecover")
    hp = method.resolve({"particles": 16, "iterations": 8, "search": "de", "resample": "once"})
    a = method.update(_ctx(ref, m1, xu, yu, seed=3), hp)
    b = method.update(_ctx(ref, m1, xu, yu, seed=3), hp)
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k
    assert a.info["search"] == "de" and a.info["iterations"] <= 8
    assert method_targets(a.model, ref.model)  # something was edited
    c = method.update(_ctx(ref, m1, xu, yu, seed=4), hp)
    assert any(not torch.equal(v, c.model.state_dict()[k]) for k, v in a.model.state_dict().items())


def test_no_flips_returns_m2_unchanged_with_a_note(digits_update):
    ref, _, xu, yu = digits_update
    method = get_method("neurecover")
    out = method.update(_ctx(ref, ref.model, xu, yu), method.resolve({}))  # M1 == M2: no flips
    assert "no negative flips" in out.info["note"] and out.info["n_neg"] == 0
    assert out.info["localised_total"] == 0 and out.model is not ref.model
    assert not method_targets(out.model, ref.model)


# --------------------------------------------------------------------------- other models


class Plain(nn.Module):
    """Not a FlipNet: no `features`/`head`."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.hidden = nn.Linear(4 * 16, 16)
        self.out = nn.Linear(16, 4)

    def forward(self, x):
        h = F.relu(self.conv(x)).flatten(1)
        return self.out(F.relu(self.hidden(h)))


def test_non_flipnet_model_repairs_only_its_last_linear():
    torch.manual_seed(0)
    x = torch.randn(240, 1, 4, 4)
    y = x.reshape(240, 2, 2, 2, 2).sum((1, 3)).flatten(1).argmax(1)  # the brightest quadrant
    m1 = Plain()
    fit(m1, x[:80], y[:80], TrainRecipe(epochs=6, batch_size=16), seed=0)
    m1.eval()
    xu, yu = x[80:], y[80:]
    repair_idx, train_idx = torch.arange(0, 60), torch.arange(60, 160)
    m2 = copy.deepcopy(m1).train()
    res = fit(m2, xu[train_idx], yu[train_idx], TrainRecipe(epochs=3, batch_size=16, lr=0.2), seed=1, keep_history=2)
    ref = types.SimpleNamespace(model=m2.eval(), history=res.history, repair_idx=repair_idx, train_idx=train_idx)
    before = copy.deepcopy(m2.state_dict())
    method = get_method("neurecover")
    out = method.update(UpdateContext(xu, yu, 4, 4, m1, lambda i: None, TrainRecipe(), 0, torch.device("cpu"),
                                      references={CEUpdateRef: ref}),
                        method.resolve({"reduction_rate": 1.0, "particles": 12, "iterations": 5}))
    info = out.info
    assert info["scope"] == "last_linear" and "only its last nn.Linear (out.weight)" in info["note"]
    assert info["n_neg"] > 0 and set(info["localised"]) == {"out.weight"} and info["localised_total"] > 0
    changed = out.model.out.weight != m2.out.weight
    assert 0 < int(changed.sum()) <= info["localised_total"]
    for k, v in out.model.state_dict().items():
        if k != "out.weight":
            assert torch.equal(v, m2.state_dict()[k]), k
    for k, v in m2.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_model_whose_last_linear_is_not_the_output_is_refused():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 4), nn.Softmax(dim=1))
    with pytest.raises(UsageError, match="does not output its logits"):
        nr.find_scope(model, torch.randn(2, 1, 4, 4))
    with pytest.raises(UsageError, match="no nn.Linear"):
        nr.find_scope(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten()), torch.randn(2, 1, 4, 4))


def test_hyperparameters_are_declared_and_validated():
    method = get_method("neurecover")
    hp = method.resolve({})
    assert hp == {"reduction_rate": 0.1, "particles": 100, "iterations": 100, "patience": 10,
                  "pos_samples": 200, "alpha": 1.0, "resample": "iteration", "search": "pso"}
    with pytest.raises(UsageError, match="search"):
        method.resolve({"search": "ga"})
    with pytest.raises(UsageError, match="particles"):
        method.resolve({"particles": 2})
    with pytest.raises(UsageError, match="reduction_rate"):
        method.resolve({"reduction_rate": 0.0})


def test_converged_update_localises_on_the_flips_against_m1(digits_update, monkeypatch):
    """When the last epoch degraded no training input (a converged update), the repair
    localises on I_neg itself instead of doing nothing."""
    import flipsearch.methods.neurecover.method as nr

    real = nr.history_split

    def nothing_degraded(*args, **kwargs):
        x_deg, x_imp = real(*args, **kwargs)
        return x_deg[:0], x_imp

    monkeypatch.setattr(nr, "history_split", nothing_degraded)
    ref, m1, xu, yu = digits_update
    info = get_method("neurecover").update(_ctx(ref, m1, xu, yu), get_method("neurecover").resolve({})).info
    assert info["deg_source"].startswith("negative flips against M1")
    assert info["n_deg"] == info["n_neg"] >= 3
    assert info["localised_total"] > 0
    assert info["repair_rr_after"] > info["repair_rr_before"]


# --------------------------------------------------------------------------- per-reference cache


def _result(out):
    """A repair's weights and info without the timings and the cache status."""
    skip = {"seconds", "seconds_localise", "seconds_search", "cache"}
    return out.model.state_dict(), {k: v for k, v in out.info.items() if k not in skip}


def _same(a, b):
    (wa, ia), (wb, ib) = _result(a), _result(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert ia == ib


def test_trials_sharing_a_reference_reuse_its_preparation_bit_identically(digits_update, monkeypatch):
    import flipsearch.methods.neurecover.localisation as loc_module
    import flipsearch.methods.neurecover.method as nrm

    ref, m1, xu, yu = digits_update
    cache = DerivedCache()  # a reference store's cache, shared by the trials of a worker
    keys = {"m1": "m1-test", "ce_update": "ce_update-test"}  # the references' content addresses
    passes = {"prepare": 0, "collect": 0, "history": 0, "impacts": 0}
    for module, name, attr in ((nrm, "prepare", "prepare"), (nrm, "collect", "_collect"),
                               (nrm, "history", "history_split"), (loc_module, "impacts", "impacts")):
        def counted(*a, _f=getattr(module, attr), _n=name, **k):
            passes[_n] += 1
            return _f(*a, **k)
        monkeypatch.setattr(module, attr, counted)

    method = get_method("neurecover")
    hp1 = method.resolve({"reduction_rate": 0.1, "particles": 16, "iterations": 6})
    hp2 = method.resolve({"reduction_rate": 0.3, "particles": 24, "iterations": 5, "resample": "once"})
    first = method.update(_ctx(ref, m1, xu, yu, seed=2, keys=keys, cache=cache), hp1)
    assert first.info["cache"] == "miss" and first.info["localised_total"] > 0
    assert passes == {"prepare": 1, "collect": 1, "history": 1, "impacts": 2}

    # A later trial with other hyperparameters on the same reference models (new objects
    # each trial, as a sweep loads them): no forward pass of the preparation again.
    again = types.SimpleNamespace(model=copy.deepcopy(ref.model), history=ref.history, repair_idx=ref.repair_idx,
                                  train_idx=ref.train_idx)
    hit = method.update(_ctx(again, copy.deepcopy(m1), xu, yu, seed=5, keys=keys, cache=cache), hp2)
    assert hit.info["cache"] == "hit"
    assert passes == {"prepare": 1, "collect": 1, "history": 1, "impacts": 2}
    assert hit.info["localised_budget"] != first.info["localised_budget"]  # other rate, other budget

    # Exactly what a fresh computation gives: with the cache cleared, and without keys.
    cache.clear()
    fresh = method.update(_ctx(again, m1, xu, yu, seed=5, keys=keys, cache=cache), hp2)
    assert fresh.info["cache"] == "miss" and passes["prepare"] == 2
    _same(hit, fresh)
    plain = method.update(_ctx(ref, m1, xu, yu, seed=5), hp2)
    assert plain.info["cache"] == "off"
    _same(hit, plain)
