"""Each update method does its job on real training (issue 3, "Done when").

Every comparison runs full trials (`run_trial`) on the embedded digits with the `small`
model, against `ce` with the same seed and the same reference M1: the trials of one seed
share a `ReferenceStore`, so M1 is trained once and the treated trial loads it (checked via
`references["m1"] == "hit"`). NeuRecover is a repair, so its baseline is the CE update it
repairs (M1 fine-tuned with CE on the same D_update rows as `ce`, the shared "ce_update"
reference); its repair split is a share of those rows.

Why statistical claims over several seeds, and these margins. Which samples flip is
chaotic: a change in the last bit of one early gradient (another CPU's SIMD kernels,
another thread count) gives another realisation of every training run, as different as
another seed. One thread and deterministic algorithms (the `deterministic` fixture) make a
run repeat exactly on one machine, not across machines; so each claim must hold for a
random realisation. Measured on 20 seeds (1 thread, 2026-12-02): the effects are large on
the mean but not on every seed -- MPT had more old-class flips than the fine-tuned CE on 3
of 20 seeds, NeuRecover raised test BR on 4, and FD's mean ratio was 0.50. The former
claims (at least a halving -- NeuRecover: 0.8x -- and no seed worse, on 3 seeds) failed on a random
realisation about half the time for FD, 39 % for MPT and 49 % for NeuRecover (one such
failure, NeuRecover's seed 2, was what a fresh machine saw). Each claim below is on the
seed mean, over 8 seeds (NeuRecover: 12), with its threshold set where a bootstrap of the
20 measured seeds fails it at most 0.1 % of the time (listed per test); every threshold
still fails when the method does nothing (ratio 1).

Why these settings (measured with scratch scripts while writing this file, 3-5 seeds):
- On the default exclusive-op fine-tune CE breaks only ~2 of 539 test samples, so settings
  with more flips are used: an M2 trained from scratch on little data (FD), a short update
  that adds classes (BCT, MPT), a short aggressive fine-tune (NeuRecover).
- BCT is shown in `class-incremental`: there S (samples M1 gets right) is about half of each
  batch, so the new-error term really shifts weight onto what M1 knew. In the same-class
  arrangements M1 is right on ~90-99 % of D_update, S is nearly the whole batch and the
  dissonance is ~λ·CE -- a learning-rate change, not a compatibility one (measured:
  exclusive-op, 2 epochs, lr 0.01: NFR CE 0.80 % vs BCT λ=1..5 1.2-1.7 %). λ_c = 2 with
  lr 0.01: with `dissonance_scale=support` an M1-correct sample weighs 1 + λ·N/|S| ≈ 5 here,
  so the step on them is ~5x larger; at lr 0.05, λ_c = 2 already costs accuracy and adds
  flips, and λ_c = 3 diverges in 2 of 3 seeds.
- FD with `distance=lm` at its default λ = 1 diverges or collapses on digits from lr 0.01 up
  when trained from scratch (the teacher's logits have std ~5): the test uses the default kl.
"""

from __future__ import annotations

import statistics

import pytest
import torch

from flipsearch.metrics import compute_metrics
from flipsearch.models import build_model
from flipsearch.methods.neurecover import repair_split
from flipsearch.references import ReferenceStore
from flipsearch.train import predict_logits
from flipsearch.trial import TrialConfig, TrialResult, load_scenario, run_trial

SEEDS = tuple(range(8))
NEURECOVER_SEEDS = tuple(range(12))


def _trial(arrangement: str, method: str, seed: int, store: ReferenceStore, **settings) -> TrialResult:
    cfg = TrialConfig(dataset="digits", arrangement=arrangement, method=method, seed=seed).with_settings(settings)
    result = run_trial(cfg, store=store)
    assert result.status == "ok", f"{method} seed {seed}: {result.status} {result.error}"
    return result


def _pairs(arrangement: str, stores: dict[int, ReferenceStore], base: dict, treated: tuple[str, dict],
           shared: dict) -> tuple[list[TrialResult], list[TrialResult]]:
    """CE (with `base` settings) and the treated method, per seed, on one shared store."""
    ce, other = [], []
    for seed in SEEDS:
        ce.append(_trial(arrangement, "ce", seed, stores[seed], **shared, **base))
        other.append(_trial(arrangement, treated[0], seed, stores[seed], **shared, **treated[1]))
        assert other[-1].references["m1"] == "hit"  # the very M1 the CE trial used
    return ce, other


def _mean(results: list[TrialResult], key: str) -> float:
    return statistics.mean(r.metrics[key] for r in results)


def _assert_lower_on_the_mean(key: str, treated: list[TrialResult], ce: list[TrialResult], factor: float):
    """The treated seed mean of `key` is at most `factor` times CE's, and strictly lower
    when `factor` is 1 (CE must have flips)."""
    t = [r.metrics[key] for r in treated]
    c = [r.metrics[key] for r in ce]
    msg = f"{key}: method {t} (mean {statistics.mean(t):.4f}) vs ce {c} (mean {statistics.mean(c):.4f})"
    assert statistics.mean(c) > 0, f"the setting produced no flips to reduce; {msg}"
    if factor >= 1:
        assert statistics.mean(t) < statistics.mean(c), msg
    else:
        assert statistics.mean(t) <= factor * statistics.mean(c), msg


def _assert_it_trains(results: list[TrialResult]):
    """Fewer flips did not come by collapse: mean accuracy >= 90 %, no seed below 85 %
    (measured over 20 seeds: means 92.6-94.7 %, lowest single seed 90.7 %)."""
    acc = [r.metrics["accuracy_new"] for r in results]
    assert statistics.mean(acc) >= 0.9 and min(acc) >= 0.85, acc


@pytest.fixture(autouse=True, scope="module")
def deterministic():
    """One intra-op thread and deterministic algorithms, restored afterwards: a run then
    repeats exactly on one machine. (Tiny models also train faster on one thread, and many
    times faster when other processes load the machine: a class-incremental trial took
    0.3 s on 1 thread and 20 s on 2 under load.)"""
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(det)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def class_incremental_stores():
    """One store per seed, shared by the BCT and MPT tests: M1 (classes 0-4) is trained once."""
    return {seed: ReferenceStore() for seed in SEEDS}


@pytest.mark.slow
def test_bct_with_high_lambda_lowers_nfr_and_br(class_incremental_stores):
    # Measured (20 seeds): NFR CE 2.03 % vs BCT 0.80 %, BR 4.10 % vs 1.61 % (ratio 0.39 each;
    # BCT worse on no seed, equal on 1); threshold 0.7: bootstrap failure < 0.01 %.
    ce, bct = _pairs("class-incremental", class_incremental_stores, {}, ("bct", {"lambda_c": 2.0}),
                     {"update.epochs": 3, "update.lr": 0.01})
    assert bct[0].hparams["variant"] == "new-error" and bct[0].hparams["dissonance_scale"] == "support"
    _assert_lower_on_the_mean("nfr", bct, ce, 0.7)
    _assert_lower_on_the_mean("br", bct, ce, 0.7)
    _assert_it_trains(bct)


@pytest.mark.slow
def test_focal_distillation_lowers_nfr():
    # PCT's setting: M2 trained from scratch on D_update, distilled from M1 (defaults: kl, τ 5,
    # α 1, β 5, λ 1). Measured (20 seeds): NFR CE 8.66 % vs FD 4.34 % (ratio 0.50, FD lower on
    # every seed); threshold 0.8: bootstrap failure 0.01 %.
    stores = {seed: ReferenceStore() for seed in SEEDS}
    ce, fd = _pairs("exclusive-dev", stores, {}, ("fd", {}), {"init": "scratch"})
    _assert_lower_on_the_mean("nfr", fd, ce, 0.8)
    _assert_it_trains(fd)


@pytest.mark.slow
def test_mpt_lowers_old_class_nfr_in_class_incremental(class_incremental_stores):
    # MPT's defaults (k 4, kl, τ 5, λ_old = λ_new = 1, from scratch), 3 update epochs.
    # Measured (20 seeds): old-class NFR CE scratch 3.59 %, CE fine-tune 1.43 %, MPT 0.46 %
    # (ratios 0.13 and 0.32; MPT worse than the fine-tune on 3 seeds: these are 0-12 flips
    # among 270 old-class test samples); thresholds 0.5 and "lower" (< 1): bootstrap
    # failure < 0.01 % and 0.1 %.
    shared = {"update.epochs": 3}
    mpt = [_trial("class-incremental", "mpt", seed, store, **shared) for seed, store in
           class_incremental_stores.items()]
    for init, factor in (("scratch", 0.5), ("old", 1.0)):  # MPT's own baseline and paper 1's
        ce = [_trial("class-incremental", "ce", seed, store, init=init, **shared) for seed, store in
              class_incremental_stores.items()]
        assert all(r.references["m1"] == "hit" for r in ce)  # the very M1 MPT distilled from
        _assert_lower_on_the_mean("nfr_old_classes", mpt, ce, factor)
    assert all(r.info["mpt_bias_active"] for r in mpt)
    _assert_it_trains(mpt)


class _KeepingStore(ReferenceStore):
    """A store that remembers the payload of each reference kind it handed out, so the test
    can rebuild M1 and the un-repaired CE update NeuRecover started from."""

    def __init__(self):
        super().__init__()
        self.payloads: dict[str, dict] = {}

    def get_or_build(self, key, build):
        payload, hit = super().get_or_build(key, build)
        self.payloads[key.split("-", 1)[0]] = payload
        return payload, hit


def _load(cfg: TrialConfig, payload: dict, num_classes: int, input_shape) -> torch.nn.Module:
    model = build_model(cfg.model_name, num_classes, input_shape)
    model.load_state_dict(payload["state_dict"])
    return model.eval()


def _br(y, model_old, model_new, x) -> float:
    return compute_metrics(y, predict_logits(model_old, x).argmax(1), predict_logits(model_new, x).argmax(1))["br"]


@pytest.mark.slow
def test_neurecover_lowers_br_of_the_update_it_repairs():
    # A short aggressive fine-tune (2 epochs at lr 0.2) leaves flips to repair: 5-45 negative
    # flips on the repair split over 20 seeds. Measured (20 seeds): repair-split BR 9.33 % ->
    # 4.68 % (ratio 0.50, lower on every seed), test BR 11.08 % -> 8.24 % (0.74). Not on every
    # seed on the test set: the repair split is part of the rows the update trained on, and
    # the search maximises a fitness in which one patched flip (1/|I_neg|) can outweigh
    # several broken positives (1/pos_samples each); test BR rose on 4 of 20 seeds. 12 seeds
    # (a repair trial is cheap); thresholds 0.75 (repair split) and < 1 (test): bootstrap
    # failure < 0.01 % and 0.03 %.
    rep_before, rep_after, test_before, test_after, localised = [], [], [], [], []
    for seed in NEURECOVER_SEEDS:
        store = _KeepingStore()
        cfg = TrialConfig(dataset="digits", arrangement="exclusive-op", method="neurecover", seed=seed
                          ).with_settings({"update.epochs": 2, "update.lr": 0.2})
        result = run_trial(cfg, store=store)
        assert result.status == "ok", result.error
        info = result.info
        localised.append(info["localised_total"])
        if info["n_neg"]:  # by definition: M2 gets none of I_neg and all of I_pos right
            assert info["repair_rr_before"] == 0.0 and info["repair_br_before"] == 0.0, info

        scenario = load_scenario(cfg)
        shape = scenario.dataset.input_shape
        m1 = _load(cfg, store.payloads["m1"], scenario.num_old_classes, shape)
        unrepaired = _load(cfg, store.payloads["ce_update"], scenario.num_classes, shape)
        repaired = result.model
        # BR against M1 on the repair split (the flips NeuRecover searched on) and on the test set.
        rep_idx = repair_split(scenario.y_update, seed)
        x_rep, y_rep = scenario.x_update[rep_idx], scenario.y_update[rep_idx]
        rep_before.append(_br(y_rep, m1, unrepaired, x_rep))
        rep_after.append(_br(y_rep, m1, repaired, x_rep))
        test_before.append(_br(scenario.y_test, m1, unrepaired, scenario.x_test))
        test_after.append(_br(scenario.y_test, m1, repaired, scenario.x_test))
        assert result.metrics["br"] == pytest.approx(test_after[-1])  # the trial scored the repaired model
        if info["localised_total"] == 0:  # nothing to edit: the repaired model is M2 itself
            assert rep_after[-1] == rep_before[-1] and test_after[-1] == test_before[-1]

    msg = (f"localised {localised}; repair split {rep_before} -> {rep_after}; "
           f"test {test_before} -> {test_after}")
    assert statistics.mean(rep_before) > 0, f"the setting left no flips to repair; {msg}"
    assert statistics.mean(rep_after) <= 0.75 * statistics.mean(rep_before), msg
    assert statistics.mean(test_after) < statistics.mean(test_before), msg
