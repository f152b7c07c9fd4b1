"""The first GPU run's checks (issue 26), in one process; `bench/gpu_check.sh` runs it.

Prints the device, the numerics flags and every figure; a line starting `FAIL` is a failed
check, and the exit status is 1 when there is one. Sections:

  methods   every method's trial on the device, AMP off and on, augmentation on; one
            trial saved with `flipsearch trial --save-model` and audited by `flipsearch
            compare` in a process that cannot see a GPU
  pack      `fit_pack` against solo `fit` (grouped and vmap engines; compact, small, cnn8,
            resnet18; AMP and TF32 each off and on): largest weight difference, prediction
            agreement, one member forced to diverge
  repeat    the same trial twice (fresh reference stores): are the rows identical?
  sync      CUDA only: `torch.cuda.set_sync_debug_mode("warn")` over one epoch of `fit` and
            of `fit_pack`: the host-device sync points
  curve     `pack: auto`'s throughput curve up to K = 64, peak memory against free memory
            and the memory budget of a whole GPU and of a quarter
  sweeps    embedded-Ray sweeps: `gpus_per_trial 0.25`, `pack: auto`, concurrency 4; and
            `gpus_per_trial 0` (which device the rows and the pack probe used)

    python3 bench/gpu_check.py --device cuda [--data-root DIR] [--sections methods pack ...]
    python3 bench/gpu_check.py --device cpu     # the same checks at the smallest sizes (AMP, which
                                                # is CUDA-only, once; NeuRecover with a tiny search)

What a check requires is printed beside it. Exact agreement is required only where the
numerics policy promises it (float32, TF32 off, `docs/METHODS.md` §5): AMP and TF32 figures
are printed, not judged.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import _timing  # noqa: F401  (makes the checkout's flipsearch importable)

import torch
import torch.nn.functional as F

from flipsearch import TrialConfig, numerics, read_results, sweep
from flipsearch.models import build_model
from flipsearch.pack import fit_pack
from flipsearch.references import ReferenceStore
from flipsearch.train import TrainRecipe, fit, predict_logits
from flipsearch.trial import load_data, run_trial

ROOT = Path(__file__).resolve().parent.parent
FAILS: list[str] = []
SECTIONS = ("methods", "pack", "repeat", "sync", "curve", "sweeps")


class Sizes:
    """What each section trains: the GPU sizes, or the smallest that still run every path."""

    def __init__(self, device: str):
        gpu = device == "cuda"
        self.dataset = "fashion-mnist-mini" if gpu else "digits"
        self.scale = 1.0 if gpu else 0.2
        self.epochs = 2  # neurecover needs the CE update's last two epochs
        self.m1_epochs = 2 if gpu else 1
        # AMP is CUDA-only (a recipe's `amp` is ignored on the CPU): the CPU mode runs it once
        self.amps = (False, True) if gpu else (False,)
        self.neurecover = {} if gpu else {"particles": 8, "iterations": 3}  # the default search on the GPU
        self.pack_models = ("compact", "small", "cnn8", "resnet18") if gpu else ("small", "compact")
        self.pack_n = 1024 if gpu else 128
        self.curve_sizes = (1, 2, 4, 8, 16, 32, 64) if gpu else (1, 2)
        self.sweep_trials = 8 if gpu else 2
        self.sweep_epochs = 2 if gpu else 1


def check(name: str, ok: bool, detail: str) -> None:
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}", flush=True)
    if not ok:
        FAILS.append(name)


def section(title: str) -> None:
    print(f"\n== {title}", flush=True)


def header(device: str) -> None:
    section("device")
    numerics.apply(device)
    print(f"torch {torch.__version__}, CUDA build {torch.version.cuda}, cuDNN "
          f"{torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else 'none'}")
    if device == "cuda":
        p = torch.cuda.get_device_properties(0)
        free, total = torch.cuda.mem_get_info(0)
        print(f"GPU {p.name}, compute capability {p.major}.{p.minor}, {p.multi_processor_count} SMs, "
              f"memory {free / 2**30:.1f} GiB free of {total / 2**30:.1f} GiB, {torch.cuda.device_count()} visible")
    else:
        print(f"CPU mode ({os.cpu_count()} cores, torch threads {torch.get_num_threads()}); "
              f"CUDA available: {torch.cuda.is_available()}")
    print("numerics: " + ", ".join(f"{k}={v}" for k, v in numerics.flags().items()))


def cfg_for(sizes: Sizes, device: str, method: str, amp: bool, data_root: str | None, **kw) -> TrialConfig:
    cfg = TrialConfig(dataset=sizes.dataset, method=method, device=device, scale=sizes.scale, data_root=data_root,
                      **kw)
    hp = sizes.neurecover if method == "neurecover" else {}
    return cfg.with_settings({"update.epochs": sizes.epochs, "m1.epochs": sizes.m1_epochs, "amp": amp,
                              "update.augment": True, **hp})


# ------------------------------------------------------------------ methods


def part_methods(sizes: Sizes, device: str, data_root: str | None, out: Path) -> None:
    from flipsearch.methods import methods

    section("methods: one trial each on the device, augmentation on")
    print(f"  {'method':<11} {'amp':<5} {'status':<9} {'nfr':>7} {'acc new':>8} {'seconds':>8}")
    for amp in sizes.amps:
        store = ReferenceStore()
        dataset = None
        for method in methods():  # every registered method
            cfg = cfg_for(sizes, device, method, amp, data_root)
            dataset = dataset or load_data(cfg)
            t = time.perf_counter()
            try:
                r = run_trial(cfg, store=store, dataset=dataset)
                status, err = r.status, r.error
                nfr, acc = r.metrics.get("nfr", float("nan")), r.metrics.get("accuracy_new", float("nan"))
            except Exception as e:  # noqa: BLE001 - a crash is this check's finding
                status, err, nfr, acc = "crashed", f"{type(e).__name__}: {str(e).splitlines()[0][:200]}", 0, 0
            print(f"  {method:<11} {str(amp):<5} {status:<9} {nfr:>7.4f} {acc:>8.4f} {time.perf_counter() - t:>8.1f}")
            if status != "ok":
                check(f"methods {method} amp={amp}", False, f"status {status}: {err}")
    check("methods", not any(f.startswith("methods ") for f in FAILS), "every method's trial ended ok")

    # a checkpoint saved on the device, audited where no GPU is visible
    m2 = out / "saved" / "m2.pt"
    m2.parent.mkdir(parents=True, exist_ok=True)
    cli = [sys.executable, "-c", "from flipsearch.cli import main; main()"]  # the `flipsearch` entry point
    common = ["--dataset", sizes.dataset] + (["--data-root", data_root] if data_root else [])
    trial = subprocess.run(cli + ["trial", "--method", "fd", "--scale", str(sizes.scale), "--set", "epochs=1",
                                  "--device", device, "--save-model", str(m2)] + common,
                           capture_output=True, text=True)
    check("save-model", trial.returncode == 0, f"`flipsearch trial --save-model` on {device} exited "
          f"{trial.returncode} {trial.stderr.strip().splitlines()[-1:] if trial.returncode else ''}")
    if trial.returncode == 0:
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
        audit = subprocess.run(cli + ["compare", "--old", str(m2.with_suffix(".m1.pt")), "--new", str(m2),
                                      "--device", "cpu", "--json", "--out", str(out / "saved" / "compare")] + common,
                               capture_output=True, text=True, env=env)
        ok = audit.returncode == 0
        detail = "loaded on the CPU (no GPU visible) and audited" if ok else audit.stderr.strip()[-300:]
        check("compare saved models on cpu", ok, detail)


# ------------------------------------------------------------------ pack vs solo


def _data(sizes: Sizes, device: str, data_root: str | None):
    ds = load_data(TrialConfig(dataset=sizes.dataset, data_root=data_root, scale=sizes.scale))
    x, y = ds.x_train[:sizes.pack_n].to(device), ds.y_train[:sizes.pack_n].to(device)
    return x, y, ds.num_classes, tuple(ds.x_train.shape[1:])


def _nan_loss(logits, batch):
    return F.cross_entropy(logits, batch.y) * float("nan")


def _ce(logits, batch):
    return F.cross_entropy(logits, batch.y)


def _max_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    return max(float((p.float() - q.float()).abs().max()) for p, q in
               zip(a.state_dict().values(), b.state_dict().values()) if p.is_floating_point())


def part_pack(sizes: Sizes, device: str, data_root: str | None) -> None:
    section("pack: fit_pack members against solo fit (3 members: lr 0.05, 0.02, and one forced to diverge)")
    x, y, classes, shape = _data(sizes, device, data_root)
    cuda = device == "cuda"
    print(f"  {'model':<9} {'engine':<8} {'amp':<5} {'tf32':<5} {'max |Δw|':>10} {'agree':>7}  statuses")
    tf32_before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    for model in sizes.pack_models:
        for engine in ("grouped", "vmap"):
            for amp in sizes.amps:
                for tf32 in ((False, True) if cuda else (False,)):
                    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
                    name = f"pack {model} {engine} amp={amp} tf32={tf32}"
                    recipes = [TrainRecipe(epochs=1, batch_size=64, lr=lr, amp=amp, augment=True)
                               for lr in (0.05, 0.02, 0.05)]
                    members = [build_model(model, classes, shape, seed=1).to(device) for _ in range(3)]
                    try:
                        res = fit_pack(members, x, y, recipes, seed=0, loss_fns=[_ce, _ce, _nan_loss], engine=engine)
                    except Exception as e:  # noqa: BLE001 - an engine that cannot run the model is a finding
                        msg = str(e).splitlines()[0][:160]
                        unsupported = "grouped pack engine cannot run" in msg
                        print(f"  {model:<9} {engine:<8} {str(amp):<5} {str(tf32):<5} {'-':>10} {'-':>7}  {msg}")
                        if not unsupported:
                            check(name, False, f"{type(e).__name__}: {msg}")
                        continue
                    diffs, agree = [], []
                    for j in (0, 1):
                        solo = build_model(model, classes, shape, seed=1).to(device)
                        fit(solo, x, y, recipes[j], seed=0, loss_fn=_ce)
                        diffs.append(_max_diff(members[j], solo))
                        agree.append(float((predict_logits(members[j], x).argmax(1)
                                            == predict_logits(solo, x).argmax(1)).float().mean()))
                    statuses = [r.status for r in res]
                    print(f"  {model:<9} {engine:<8} {str(amp):<5} {str(tf32):<5} {max(diffs):>10.2e} "
                          f"{min(agree):>7.4f}  {','.join(statuses)}", flush=True)
                    if statuses != ["finished", "finished", "diverged"]:
                        check(name + " statuses", False, f"{statuses} (want finished, finished, diverged)")
                    if not amp and not tf32:  # the policy's promise: float32 packs equal their solo runs
                        if max(diffs) > 1e-3 or min(agree) < 0.99:
                            check(name, False, f"max |Δw| {max(diffs):.2e} (≤ 1e-3), agreement {min(agree):.4f} "
                                               "(≥ 0.99)")
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32_before
    check("pack", not any(f.startswith("pack ") for f in FAILS),
          "float32 members equal their solo runs (|Δw| ≤ 1e-3, agreement ≥ 0.99); a NaN member leaves as diverged")


# ------------------------------------------------------------------ the same trial twice


def part_repeat(sizes: Sizes, device: str, data_root: str | None) -> None:
    section("repeat: the same trial twice, fresh reference stores")
    for amp in sizes.amps:
        cfg = cfg_for(sizes, device, "fd", amp, data_root)
        a, b = (run_trial(cfg, store=ReferenceStore()) for _ in range(2))
        same = a.metrics == b.metrics and a.status == b.status
        diff = {k: (a.metrics[k], b.metrics.get(k)) for k in a.metrics if a.metrics[k] != b.metrics.get(k)}
        check(f"repeat amp={amp}", same, "identical rows" if same else f"differ: {dict(list(diff.items())[:4])}")


# ------------------------------------------------------------------ sync points


def part_sync(sizes: Sizes, device: str, data_root: str | None) -> None:
    section("sync: host-device synchronisations over one epoch (set_sync_debug_mode warn)")
    if device != "cuda":
        print("  (CUDA only)")
        return
    x, y, classes, shape = _data(sizes, device, data_root)
    for amp in (False, True):
        recipe = TrainRecipe(epochs=1, batch_size=64, amp=amp, augment=True)
        runs = {"fit": lambda: fit(build_model("cnn8", classes, shape, seed=1).to(device), x, y, recipe, seed=0),
                "fit_pack K=4": lambda: fit_pack([build_model("cnn8", classes, shape, seed=i).to(device)
                                                  for i in range(4)], x, y, [recipe] * 4, seed=0,
                                                 loss_fns=[_ce] * 4)}
        for label, run in runs.items():
            run()  # warm-up: lazy initialisation syncs are not the loop's
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    run()
                finally:
                    torch.cuda.set_sync_debug_mode(0)
            sites: dict[str, int] = {}
            for w in caught:
                if "synchroniz" in str(w.message).lower():
                    key = f"{Path(w.filename).name}:{w.lineno}"
                    sites[key] = sites.get(key, 0) + 1
            steps = -(-len(x) // recipe.batch_size)
            print(f"  {label} amp={amp}: {sum(sites.values())} syncs in {steps} steps; "
                  + (", ".join(f"{k} ×{v}" for k, v in sorted(sites.items(), key=lambda kv: -kv[1])) or "none"))


# ------------------------------------------------------------------ pack: auto's curve


def part_curve(sizes: Sizes, device: str, data_root: str | None) -> None:
    from flipsearch.pack_size import choose_pack_size, throughput_curve

    section("curve: pack auto's throughput curve (fd recipe, cnn8)")
    from flipsearch.pack_size import memory_budget

    model = "cnn8" if device == "cuda" else "small"
    cfg = cfg_for(sizes, device, "fd", False, data_root, model=model)
    points = throughput_curve(cfg, sizes=sizes.curve_sizes, gpu_share=1.0)
    if device == "cuda":
        free, total = torch.cuda.mem_get_info(0)
        print(f"  free memory {free / 2**20:.0f} MiB of {total / 2**20:.0f}; a pack may plan on "
              f"{memory_budget(torch.device('cuda'), 1.0) / 2**20:.0f} MiB with a whole GPU, "
              f"{memory_budget(torch.device('cuda'), 0.25) / 2**20:.0f} MiB with gpus_per_trial 0.25")
    for p in points:
        print(f"    K={p.k:<3} {p.rate:>10.0f} member-samples/s  {p.seconds:6.2f} s  peak {p.peak_bytes / 2**20:8.0f} MiB")
    check("curve", bool(points), f"{len(points)} points, chosen K = {choose_pack_size(points)}")


# ------------------------------------------------------------------ sweeps


SPACE = """
name: gpu-check-{name}
scenario: {{datasets: [{dataset}], arrangements: [exclusive-op], seeds: [0], scale: {scale},
           training: {{epochs: {epochs}}}}}
objectives: [accuracy_new:max, nfr:min]
search: {{sampler: random, trials_per_scenario: {trials}, seed: 1, concurrency: {concurrency}, pack: auto,
         scheduler: fifo, gpus_per_trial: {gpus}, cpus_per_trial: 1}}
methods:
  fd: {{lambda: {{loguniform: [0.5, 4.0]}}}}
"""


def part_sweeps(sizes: Sizes, device: str, data_root: str | None, out: Path) -> None:
    import ray

    section("sweeps: embedded Ray, pack auto")
    if not ray.is_initialized():  # one Ray for both sweeps; CPU mode pretends one GPU to take the GPU path
        kw = {} if device == "cuda" else {"num_gpus": 1}
        ray.init(num_cpus=max(4, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False, **kw)
    want = "cuda" if device == "cuda" else "cpu"
    cases = [(0.25, 4, want), (0.0, 2, "cpu")]
    if device == "cpu":  # on the CPU the second case is any sweep (the suite runs many); the first takes the GPU path
        cases = cases[:1]
    for gpus, concurrency, expect in cases:
        name = f"gpus{str(gpus).replace('.', '')}"
        space = out / f"{name}.yaml"
        space.write_text(SPACE.format(name=name, dataset=sizes.dataset, scale=sizes.scale, epochs=sizes.sweep_epochs,
                                      trials=sizes.sweep_trials, concurrency=concurrency, gpus=gpus))
        run_out = out / name
        t = time.perf_counter()
        try:
            summary = sweep(str(space), out=str(run_out), quiet=True)
        except Exception as e:  # noqa: BLE001 - a sweep that does not run is this check's finding
            check(f"sweep gpus_per_trial={gpus}", False, f"{type(e).__name__}: {str(e).splitlines()[0][:300]}")
            continue
        rows = read_results(str(run_out))
        record = json.loads((run_out / "pack_auto.json").read_text())
        probe = sorted({p.get("device", "?") for c in record["curves"].values() for p in c})
        devices = sorted(set(rows["device"].astype(str)))
        print(f"  gpus_per_trial {gpus}, concurrency {concurrency}: {len(rows)} rows "
              f"{ {k: int(v) for k, v in rows['status'].value_counts().items()} } in {time.perf_counter() - t:.0f} s; "
              f"pack sizes {sorted(int(k) for k in set(rows['pack_size']))} (chosen {record['sizes']}); "
              f"rows on {devices}; probe on {probe}")
        check(f"sweep gpus_per_trial={gpus}", (rows["status"] == "ok").all() and devices == [expect]
              and probe in ([expect], []), f"every row ok and on {expect}, the probe on {expect} too "
              f"({summary.trials_run} trials run)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--data-root", default=None, help="where torchvision datasets lie (not needed: the checks "
                                                      "use the embedded fashion-mnist-mini and digits)")
    ap.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    ap.add_argument("--out", default=None, help="scratch folder (default: a temporary one)")
    from _timing import parse_with_smoke

    args = parse_with_smoke(ap, ["--device", "cpu", "--sections", "methods"])  # the suite's check (tests/test_bench.py)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: FAIL no CUDA device visible to torch (run `bash bench/gpu_check.sh cpu` "
                         "for the CPU mode)")
    torch.manual_seed(0)
    if args.device == "cpu":
        torch.set_num_threads(1)  # as a sweep trial's default cpus_per_trial: 1 (and quick on a shared machine)
    sizes = Sizes(args.device)
    t0 = time.perf_counter()
    header(args.device)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        out = Path(args.out or tmp)
        out.mkdir(parents=True, exist_ok=True)
        for name in args.sections:
            t = time.perf_counter()
            try:
                if name in ("methods", "sweeps"):
                    globals()[f"part_{name}"](sizes, args.device, args.data_root, out)
                else:
                    globals()[f"part_{name}"](sizes, args.device, args.data_root)
            except Exception as e:  # noqa: BLE001 - one section's crash must not hide the others' figures
                check(name, False, f"crashed: {type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}")
            print(f"  ({name}: {time.perf_counter() - t:.0f} s)", flush=True)
    print(f"\ngpu_check.py: {time.perf_counter() - t0:.0f} s; " + (f"{len(FAILS)} failed: {', '.join(FAILS)}"
                                                                  if FAILS else "every check passed"))
    sys.exit(1 if FAILS else 0)


if __name__ == "__main__":
    main()
