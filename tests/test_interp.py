"""`interp`: the endpoints are M1 and the CE update exactly (real training on digits), the
new classes' rows come from the update, and a trial trains nothing once the CE update exists."""

from __future__ import annotations

import pytest
import torch

from flipsearch import TrialConfig, run_trial
from flipsearch.methods import get_method, methods
from flipsearch.methods.interp import interpolate_state, recompute_bn_stats
from flipsearch.references import ReferenceStore
from flipsearch.trial import load_scenario
from flipsearch.train import predict_logits

BASE = TrialConfig(dataset="digits", method="interp").with_settings({"epochs": 2})


def _test_predictions(cfg: TrialConfig, model: torch.nn.Module) -> torch.Tensor:
    return predict_logits(model, load_scenario(cfg).x_test).argmax(1)


@pytest.mark.slow
def test_alpha_0_is_m1_and_alpha_1_is_the_ce_update_exactly():
    store = ReferenceStore()
    ce = run_trial(BASE.replace(method="ce"), store=store)  # M1 fine-tuned with CE: what interp reuses
    at0 = run_trial(BASE.replace(hparams={"alpha": 0.0}), store=store)
    at1 = run_trial(BASE.replace(hparams={"alpha": 1.0}), store=store)
    trained = store.trained
    mid = run_trial(BASE.replace(hparams={"alpha": 0.5}), store=store)
    assert store.trained == trained  # a trial at another alpha trains nothing: M1 and the CE update are shared
    assert at0.status == at1.status == mid.status == "ok"
    m1_pred = _test_predictions(BASE, at0.old_model)
    assert torch.equal(_test_predictions(BASE, at0.model), m1_pred)
    assert at0.metrics["nfr"] == 0.0 and at0.metrics["accuracy_new"] == at0.metrics["accuracy_old"]
    assert torch.equal(_test_predictions(BASE, at1.model), _test_predictions(BASE, ce.model))
    assert {k: at1.metrics[k] for k in ce.metrics} == ce.metrics
    for k, v in ce.model.state_dict().items():  # the CE update's weights, bit for bit
        assert torch.equal(at1.model.state_dict()[k], v), k
    # in between: the weights are the mix of the two (M1 the same model in both runs)
    w0, w1 = at0.model.state_dict(), at1.model.state_dict()
    for k, v in mid.model.state_dict().items():
        if v.is_floating_point():
            assert torch.allclose(v, 0.5 * w0[k] + 0.5 * w1[k], atol=1e-6), k


@pytest.mark.slow
def test_class_incremental_new_rows_come_from_the_update():
    cfg = BASE.replace(arrangement="class-incremental", hparams={"alpha": 0.0})
    store = ReferenceStore()
    at0 = run_trial(cfg, store=store)
    at1 = run_trial(cfg.replace(hparams={"alpha": 1.0}), store=store)
    n_old = at0.scenario["num_old_classes"]
    m1, m2, ce = at0.old_model.state_dict(), at0.model.state_dict(), at1.model.state_dict()
    out_w = [k for k, v in m2.items() if v.dim() == 2 and v.shape[0] == at0.scenario["num_classes"]][-1]
    out_b = out_w.replace("weight", "bias")
    for k in (out_w, out_b):
        assert torch.equal(m2[k][:n_old], m1[k])  # alpha 0: M1's old-class rows
        assert torch.equal(m2[k][n_old:], ce[k][n_old:])  # the new classes' rows: the update's
    assert at0.info["new_class_rows"] == "from the CE update"


def test_batchnorm_statistics_are_recomputed_or_interpolated():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 6 * 6, 3))
    a, b = net.state_dict(), {k: v + 1.0 if v.is_floating_point() else v + 5 for k, v in net.state_dict().items()}
    mixed = interpolate_state(a, b, 0.25, num_old=3)
    assert torch.allclose(mixed["1.running_var"], 0.75 * a["1.running_var"] + 0.25 * b["1.running_var"])
    assert torch.equal(mixed["1.num_batches_tracked"], b["1.num_batches_tracked"])
    net.load_state_dict(mixed)
    x = torch.randn(40, 1, 8, 8)
    assert recompute_bn_stats(net, x, batch_size=16) == 1  # batches of 16, 16 and 8
    with torch.no_grad():
        h = net[0](x)  # the mixed weights' own activations
    parts = [h[:16], h[16:32], h[32:]]
    assert torch.allclose(net[1].running_mean, h.mean((0, 2, 3)), atol=1e-5)  # weighted by batch size
    var = sum(len(p) * p.var((0, 2, 3), unbiased=True) for p in parts) / len(h)
    assert torch.allclose(net[1].running_var, var, atol=1e-5)
    assert not net.training and net[1].momentum == 0.1


def test_interp_is_listed_with_its_knob():
    assert "interp" in methods()
    alpha = {h.name: h for h in get_method("interp").hparams}["alpha"]
    assert (alpha.low, alpha.high) == (0.0, 1.0)
