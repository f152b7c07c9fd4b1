"""What a first GPU run would break, checked on the CPU (issue 26): CUDA memory queries,
out-of-memory errors and Ray's GPU assignment are stubbed; everything else trains for real
on the digits. `bench/gpu_check.sh` checks the rest on a GPU; its CPU mode runs here too."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from flipsearch import TrialConfig, numerics
from flipsearch.data import dataset_defaults, load_dataset
from flipsearch.errors import DivergedError, UsageError
from flipsearch.methods._base import Teacher
from flipsearch.models import build_model
from flipsearch.pack import fit_pack
from flipsearch.pack_size import CurvePoint, choose_pack_size, grow, memory_budget, throughput_curve
from flipsearch.references import DerivedCache, ReferenceBuilder, ReferenceStore
from flipsearch.search import auto_pack, trainable
from flipsearch.train import Batch, TrainRecipe, epoch_batches, fit, predict_logits

ROOT = Path(__file__).resolve().parent.parent
OOM = torch.cuda.OutOfMemoryError


@pytest.fixture(scope="module")
def digits():
    ds = load_dataset("digits")
    return ds.x_train[:256], ds.y_train[:256]


# ------------------------------------------------------------------ 2. pack: auto on a GPU share


def test_pack_memory_budget_is_the_trials_share_of_the_gpu(monkeypatch):
    gib = 2 ** 30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (60 * gib, 80 * gib))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 4 * gib)
    cuda = torch.device("cuda")
    assert memory_budget(cuda, 1.0) == pytest.approx(0.8 * 64 * gib)   # free + this process's cache
    assert memory_budget(cuda, 0.25) == pytest.approx(0.8 * 20 * gib)  # four packs on one GPU
    assert memory_budget(cuda, 2.0) == memory_budget(cuda, 1.0)         # a whole GPU at most


def test_doubling_stops_at_the_memory_budget_and_at_an_out_of_memory_pack():
    def measure(k):
        if k >= 8:
            raise OOM("CUDA out of memory (stub)")
        return CurvePoint(k, 1.0, 100.0 * k, peak_bytes=1000 * k)

    assert [p.k for p in grow(measure)] == [1, 2, 4]                                  # OOM ends the curve
    assert [p.k for p in grow(measure, budget_bytes=lambda: 1500.0)] == [1]           # K=2 plans 2·1000 B
    assert [p.k for p in grow(measure, budget_bytes=lambda: 3000.0)] == [1, 2]        # K=4 plans 2·2000 B
    assert choose_pack_size([]) == 1                                                  # nothing fitted


def test_throughput_curve_treats_cuda_oom_in_a_step_as_stop_doubling(monkeypatch):
    from flipsearch import pack_size

    calls = []

    def step(models, *args, **kw):  # a fake step: packs of 4 run out of memory
        calls.append(len(models))
        if len(models) >= 4:
            raise OOM("CUDA out of memory (stub)")
        return fit_pack(models, *args, **kw)

    monkeypatch.setattr(pack_size, "fit_pack", step)
    monkeypatch.setattr(pack_size, "GAIN", 0.0)  # only memory may end this curve
    points = throughput_curve(TrialConfig(dataset="digits", method="fd", device="cpu"))
    assert [p.k for p in points] == [1, 2] and calls[-1] == 4
    assert choose_pack_size(points) in (1, 2)


def _fake_ray(monkeypatch, events):
    """ray.remote(...).options(...).remote(...) and ray.get, recording their order."""
    import ray

    class Task:
        def options(self, **kw):
            events.append(("options", kw))
            return self

        def remote(self, cfg, dataset, gpus):
            events.append(("launch", cfg["model"], gpus))
            return cfg["model"]

    def get(ref):
        events.append(("wait", ref))
        return [{"k": 1, "seconds": 1.0, "rate": 10.0, "peak_bytes": 0, "device": "cpu"},
                {"k": 2, "seconds": 1.0, "rate": 30.0, "peak_bytes": 0, "device": "cpu"}]

    monkeypatch.setattr(ray, "remote", lambda fn: Task())
    monkeypatch.setattr(ray, "get", get)


def test_auto_pack_probes_one_scenario_at_a_time_with_the_trials_gpu_share(monkeypatch, tmp_path):
    from flipsearch.storage import Storage

    events = []
    _fake_ray(monkeypatch, events)
    templates = {"a": TrialConfig(dataset="digits", method="fd", model="small"),
                 "b": TrialConfig(dataset="digits", method="fd", model="compact")}
    space = types.SimpleNamespace(methods=["fd"], templates=templates, trials_per_scenario=8, concurrency=1,
                                  cpus_per_trial=1, gpus_per_trial=0.25)
    sizes = auto_pack.auto_pack_sizes(space, Storage.open(str(tmp_path)), ["a", "b"], {}, quiet=True)
    assert sizes == {"a": 2, "b": 2}
    assert events[0] == ("options", {"num_cpus": 1, "num_gpus": 0.25, "max_retries": 0})
    assert [e[0] for e in events[1:]] == ["launch", "wait", "launch", "wait"]  # never two probes at once
    assert {e[2] for e in events if e[0] == "launch"} == {0.25}


# ------------------------------------------------------------------ 3. the probe's device


def test_probe_runs_where_a_trial_runs(monkeypatch):
    seen, capped = [], []
    monkeypatch.setattr(auto_pack, "throughput_curve",
                        lambda cfg, dataset, gpu_share: seen.append((cfg.device, gpu_share)) or [])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU host ...
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f, d=None: capped.append(f))
    cfg = TrialConfig(dataset="digits", method="fd").to_dict()

    monkeypatch.setattr(trainable, "_gpu_ids", lambda: [])  # ... and a worker given no GPU (gpus_per_trial 0)
    auto_pack._measure(cfg, None, 0)
    assert seen[-1] == ("cpu", 1.0) and capped == []        # not cuda:0, which every zero-GPU worker sees

    monkeypatch.setattr(trainable, "_gpu_ids", lambda: ["0"])  # a quarter of GPU 0
    monkeypatch.setattr(trainable, "assigned_gpu_share", lambda: 0.25)
    auto_pack._measure(cfg, None, 0.25)
    assert seen[-1] == ("cuda", 0.25) and capped == [0.25]


# ------------------------------------------------------------------ 4. GPU memory in reused actors


def test_per_process_gpu_memory_is_capped_to_a_fractional_share(monkeypatch):
    capped = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f, d=None: capped.append((f, str(d))))
    assert trainable.limit_gpu_memory(0.25, "cuda") and capped == [(0.25, "cuda")]
    assert not trainable.limit_gpu_memory(1.0, "cuda")   # a whole GPU: nothing to share
    assert not trainable.limit_gpu_memory(0.0, "cpu")
    assert not trainable.limit_gpu_memory(0.5, "cpu")
    assert len(capped) == 1


def test_a_sweep_trial_empties_the_cuda_cache_after_it_ends(monkeypatch, tmp_path):
    import ray.tune

    emptied, reports = [], []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(1))
    monkeypatch.setattr(ray.tune, "report", lambda metrics: reports.append(metrics))
    cfg = TrialConfig(dataset="digits", method="ce", scale=0.3).with_settings({"epochs": 1})
    config = {"config": cfg.to_dict(), "study": "s", "trial_number": 0, "trial_uid": "u0"}
    trainable.flip_trainable(config, {"run_id": "r", "out_uri": str(tmp_path)})
    assert reports[-1]["status_ok"] and emptied == [1]


def test_derived_values_are_kept_on_the_cpu_and_handed_out_on_the_callers_device():
    @dataclasses.dataclass
    class Prep:
        h: torch.Tensor
        scores: list
        n: int

    cache = DerivedCache()
    built = Prep(torch.ones(3), [{"order": torch.arange(3)}], 7)
    value, status = cache.get(("k",), lambda: built, "meta")
    assert status == "miss" and value is built                         # the builder's own, for this trial
    stored = cache._values[("k",)]
    assert stored.h.device.type == "cpu" and stored.scores[0]["order"].device.type == "cpu"
    value, status = cache.get(("k",), lambda: pytest.fail("rebuilt"), "meta")  # "meta" stands in for cuda
    assert status == "hit" and value.h.device.type == "meta" and value.scores[0]["order"].device.type == "meta"
    assert value.n == 7 and cache._values[("k",)].h.device.type == "cpu"


def test_scenario_on_a_device_holds_its_splits_not_the_pool():
    from flipsearch.arrangements import make_scenario

    s = make_scenario(load_dataset("digits"), "exclusive-op", 0)
    moved = s.to("meta")  # "meta" stands in for cuda: no copy of the values, only placement
    assert moved.dataset.x_train.device.type == "cpu"
    for name in ("x_train", "y_train", "x_update", "y_update", "x_val", "y_val", "x_test", "y_test"):
        t = getattr(moved, name)
        assert t.device.type == "meta" and t.shape == getattr(s, name).shape, name


# ------------------------------------------------------------------ 5. numerics, keys, replay device


def test_numerics_policy_on_cuda_is_exact_float32_and_deterministic(monkeypatch):
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
              torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
              torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    monkeypatch.delenv(numerics.TF32_ENV, raising=False)
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", os.environ.get("CUBLAS_WORKSPACE_CONFIG", ":4096:8"))
    try:
        numerics.apply("cpu")
        assert numerics.flags()["deterministic_algorithms"] == before[4]  # the CPU is left alone
        numerics.apply("cuda")
        f = numerics.flags()
        assert not f["tf32_matmul"] and not f["tf32_cudnn"] and not f["cudnn_benchmark"]
        assert f["cudnn_deterministic"] and f["deterministic_algorithms"] and f["deterministic_warn_only"]
        assert f["cublas_workspace"]
        monkeypatch.setenv(numerics.TF32_ENV, "1")
        numerics.apply("cuda")
        assert numerics.flags()["tf32_cudnn"] and numerics.flags()["deterministic_algorithms"]
    finally:
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark,
         torch.backends.cudnn.deterministic) = before[:4]
        torch.use_deterministic_algorithms(before[4], warn_only=before[5])


def test_reference_keys_name_the_device_and_its_numerics(monkeypatch):
    monkeypatch.delenv(numerics.TF32_ENV, raising=False)
    recipe = TrainRecipe()

    def builder(device):
        return ReferenceBuilder(ReferenceStore(), {"dataset": "digits", "seed": 0}, "small", (1, 8, 8), 5, 10,
                                recipe, recipe, 0, torch.device(device))

    cpu, cuda = builder("cpu").key("m1", {}), builder("cuda").key("m1", {})
    assert cpu != cuda and builder("cpu").key("m1", {}) == cpu and builder("cuda:1").key("m1", {}) == cuda
    monkeypatch.setenv(numerics.TF32_ENV, "1")
    assert builder("cuda").key("m1", {}) not in (cpu, cuda)


def _row(device: str) -> dict:
    recipe = dataset_defaults("digits").recipe.as_dict()
    r = {"study": "s", "trial_number": 0, "dataset": "digits", "arrangement": "exclusive-op", "model": "small",
         "method": "ce", "seed": 0, "old_fraction": 0.5, "critical_classes": "", "status": "ok", "hp_init": "old",
         "device": device}
    r.update({f"m1_{k}": v for k, v in recipe.items()})
    r.update({f"update_{k}": v for k, v in recipe.items()})
    return r


def test_report_replays_a_row_on_its_recorded_device(monkeypatch):
    import pandas as pd

    from flipsearch.report.recommend import replay_device, trial_command

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a report machine with a GPU
    assert replay_device("cpu") == "cpu"                             # a CPU row stays on the CPU
    assert replay_device("cuda:3") == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert replay_device("cuda") == "cpu"                            # no GPU here: the NFR check says if it holds
    command, notes = trial_command(pd.Series(_row("cuda:0")))
    assert "--device cuda" in command and notes
    command, notes = trial_command(pd.Series(_row("cpu")))
    assert "--device cpu" in command and not notes


# ------------------------------------------------------------------ 6. AMP


def _inf_on(calls: list, bad: set):
    """A cross-entropy that is inf on the steps in `bad` (0-based), as an fp16 overflow gives."""
    def loss_fn(logits, batch):
        i = len(calls)
        calls.append(i)
        loss = F.cross_entropy(logits, batch.y)
        return loss * float("inf") if i in bad else loss
    return loss_fn


def test_a_step_the_gradient_scaler_skips_is_left_out_of_the_epoch_loss(digits):
    x, y = digits
    recipe = TrainRecipe(epochs=2, batch_size=64)
    model = build_model("small", 10, (1, 8, 8), seed=0)
    calls = []
    result = fit(model, x, y, recipe, seed=0, loss_fn=_inf_on(calls, {1}), _force_loss_scaling=True)
    assert len(result.epoch_losses) == 2 and all(map(torch.isfinite, torch.tensor(result.epoch_losses)))
    # without a scaler nothing skips the step: the inf is the epoch's loss, and the trial diverged
    with pytest.raises(DivergedError):
        fit(build_model("small", 10, (1, 8, 8), seed=0), x, y, recipe, seed=0, loss_fn=_inf_on([], {1}))
    # an epoch whose every step was skipped did diverge
    with pytest.raises(DivergedError, match="epoch 1"):
        fit(build_model("small", 10, (1, 8, 8), seed=0), x, y, recipe, seed=0,
            loss_fn=_inf_on([], set(range(100))), _force_loss_scaling=True)


def test_a_pack_member_whose_step_was_skipped_stays_in_the_pack(digits):
    x, y = digits
    recipe = TrainRecipe(epochs=2, batch_size=64)
    models = [build_model("small", 10, (1, 8, 8), seed=0) for _ in range(2)]
    calls = []
    good = lambda logits, batch: F.cross_entropy(logits, batch.y)  # noqa: E731
    members = fit_pack(models, x, y, [recipe] * 2, seed=0, loss_fns=[_inf_on(calls, {1}), good],
                       _force_loss_scaling=True)
    assert [m.status for m in members] == ["finished", "finished"]
    solo = build_model("small", 10, (1, 8, 8), seed=0)
    solo_fit = fit(solo, x, y, recipe, seed=0, loss_fn=_inf_on([], {1}), _force_loss_scaling=True)
    assert members[0].epoch_losses == pytest.approx(solo_fit.epoch_losses, rel=1e-5)
    for (n, a), b in zip(models[0].state_dict().items(), solo.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5), n


def test_teacher_logits_are_float32_outside_the_callers_autocast(digits):
    x, y = digits
    model = build_model("small", 10, (1, 8, 8), seed=0).eval()
    teacher = Teacher(model, torch.zeros(len(x), 10))
    batch = Batch(x[:32], y[:32], torch.arange(32), augmented=True)
    with torch.no_grad():
        want = model(x[:32])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = teacher(batch)
        low = model(x[:32])
    assert got.dtype == torch.float32 and torch.equal(got, want)
    assert low.dtype == torch.bfloat16  # what the teacher gave before: the caller's autocast


# ------------------------------------------------------------------ 7.-8. batches and evaluation


def _old_epoch_batches(x, y, recipe, gen):
    """The batches as drawn before issue 26: each batch's crops and flips drawn as it came."""
    order = torch.randperm(len(x), generator=gen)
    for start in range(0, len(x), recipe.batch_size):
        idx = order[start:start + recipe.batch_size]
        xb, n, (h, w) = x[idx], len(idx), x.shape[-2:]
        dx = torch.randint(0, 9, (n,), generator=gen)
        dy = torch.randint(0, 9, (n,), generator=gen)
        padded = F.pad(xb, (4, 4, 4, 4))
        out = padded[torch.arange(n)[:, None, None, None], torch.arange(x.shape[1])[None, :, None, None],
                     (dy[:, None] + torch.arange(h)[None])[:, None, :, None],
                     (dx[:, None] + torch.arange(w)[None])[:, None, None, :]]
        flip = torch.rand(n, generator=gen) < 0.5
        yield torch.where(flip[:, None, None, None], out.flip(-1), out), idx


def test_augmentation_drawn_once_per_epoch_is_the_per_batch_draw(digits):
    x, y = digits
    recipe = TrainRecipe(batch_size=48, augment=True)  # 256 = 5 × 48 + 16: a short last batch
    new = list(epoch_batches(x, y, recipe, torch.Generator().manual_seed(3)))
    old = list(_old_epoch_batches(x, y, recipe, torch.Generator().manual_seed(3)))
    assert len(new) == len(old) == 6
    for b, (xb, idx) in zip(new, old):
        assert torch.equal(b.idx, idx) and torch.equal(b.x, xb) and b.augmented
    again = list(epoch_batches(x, y, recipe, torch.Generator().manual_seed(3)))
    other = list(epoch_batches(x, y, recipe, torch.Generator().manual_seed(4)))
    assert all(torch.equal(a.x, b.x) for a, b in zip(new, again))
    assert not all(torch.equal(a.x, b.x) for a, b in zip(new, other))


class _SmallMemory(nn.Module):
    """A model whose 'GPU' fits at most 40 samples at once."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(64, 10)
        self.sizes = []

    def forward(self, x):
        self.sizes.append(len(x))
        if len(x) > 40:
            raise OOM("CUDA out of memory (stub)")
        return self.lin(x.flatten(1))


def test_evaluation_batch_halves_on_out_of_memory_and_is_configurable(digits, monkeypatch):
    x, _ = digits
    model = _SmallMemory()
    with torch.no_grad():
        want = model.lin(x.flatten(1))
    got = predict_logits(model, x, batch_size=128)
    assert torch.allclose(got, want, atol=1e-6) and len(got) == len(x)
    assert model.sizes[:3] == [128, 64, 32] and set(model.sizes[3:]) <= {32}  # the smaller batch stays
    model.sizes.clear()
    monkeypatch.setenv("FLIPSEARCH_EVAL_BATCH", "16")
    predict_logits(model, x)
    assert set(model.sizes) == {16}
    monkeypatch.setenv("FLIPSEARCH_EVAL_BATCH", "lots")
    with pytest.raises(UsageError, match="FLIPSEARCH_EVAL_BATCH"):
        predict_logits(model, x)
    from flipsearch.cli import main

    with pytest.raises(SystemExit) as stop:  # the CLI refuses it before any training, as bad input
        main(["trial", "--dataset", "digits", "--device", "cpu"])
    assert stop.value.code == 2


# ------------------------------------------------------------------ 9. checkpoints


def test_saved_models_are_cpu_tensors_that_compare_loads(tmp_path):
    from click.testing import CliRunner

    from flipsearch.cli import cli

    path = tmp_path / "m2.pt"
    args = ["trial", "--dataset", "digits", "--scale", "0.3", "--set", "epochs=1", "--device", "cpu",
            "--save-model", str(path)]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    for p in (path, tmp_path / "m2.m1.pt"):
        state = torch.load(p, weights_only=True)  # no map_location: a CUDA tensor would need CUDA here
        assert state and all(t.device.type == "cpu" for t in state.values())
    res = CliRunner().invoke(cli, ["compare", "--old", str(tmp_path / "m2.m1.pt"), "--new", str(path),
                                   "--dataset", "digits", "--device", "cpu", "--out", str(tmp_path / "cmp")])
    assert res.exit_code == 0, res.output


# ------------------------------------------------------------------ the GPU check's CPU mode


def test_packing_bench_falls_back_to_the_embedded_fashion_mini(monkeypatch):
    from flipsearch.errors import FlipsearchError

    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import packing

    real = packing.load_dataset

    def no_files(name, root=None):  # a bare GPU machine: no Debian folder, no data root
        if name == "fashion-mnist":
            raise FlipsearchError(f"fashion-mnist not found under {root}")
        return real(name, root)

    monkeypatch.setattr(packing, "load_dataset", no_files)
    label, ds = packing.load_fashion("/nowhere")
    assert label == "fashion-mnist-mini" and ds.x_train.shape[1:] == (1, 28, 28)
    setup, = packing.make_setups(["fashion"], torch.device("cpu"), False, 10000, "/nowhere")
    assert setup.name == "fashion-mnist-mini 6000/cnn8"  # every image the mini has, not 10,000


@pytest.mark.slow
@pytest.mark.bench  # ~1 min of its own (a fresh torch and Ray per section): the heavy tier (tests/test_bench.py)
@pytest.mark.timeout(600)
def test_gpu_check_runs_in_cpu_mode():
    """Every section of the GPU check, CPU-sized, so the script cannot rot before a GPU runs it."""
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(ROOT)}
    res = subprocess.run(["bash", "bench/gpu_check.sh", "cpu"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=1800)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "gpu_check: all checks passed" in res.stdout
    assert "FAIL" not in res.stdout
