"""Packed training (`flipsearch.pack.fit_pack`): what packing K configurations buys.

Every figure is a ratio of variants timed in the same run (interleaved, medians):

  steps   per-step time of one pack of K against K solo `train.fit` steps (fd loss)
  trials  trials/hour of whole fd update trainings (losses built through UpdateContext, as
          `LossMethod.update` builds them) run as packs of P, against pack 1 and against
          solo `LossMethod.update`
  shrink  after 4 of 8 members stop (on_epoch), the remaining 4's step time against a
          pack of those 4 from the start
  engines per-step time of the vmap engine against the grouped one, per K
  profile torch.profiler's split of one solo step and one pack step into kernel classes

Two set-ups: digits / small (batch 32, the digits default, the whole 1,258-sample pool as
D_update) and a stratified Fashion-MNIST subset / cnn8 (batch 128, the Fashion-MNIST default).
M1 is an untrained seeded model of the same architecture: its weights do not change the cost.

    python bench/packing.py [--threads 1] [--datasets digits fashion] [--parts steps trials shrink engines]
                            [--packs 1 2 4 8 16] [--epochs 4] [--fashion-n 2000] [--repeats 3]
    python bench/packing.py --device cuda --amp --datasets fashion --parts trials --packs 1 4 16 64 [--data-root DIR]
    python bench/packing.py --profile 16 --datasets digits
"""

from __future__ import annotations

import argparse
import copy
import time

import _timing  # noqa: F401
from _timing import interleave, machine, median, parse_with_smoke, set_threads

import torch

from flipsearch.data import load_dataset, subsample
from flipsearch.errors import FlipsearchError
from flipsearch.methods import get_method
from flipsearch.methods._base import UpdateContext
from flipsearch.models import build_model
from flipsearch.pack import fit_pack
from flipsearch.train import TrainRecipe

FD = get_method("fd")


class Setup:
    def __init__(self, name: str, model: str, x, y, num_classes: int, batch_size: int, device, amp: bool):
        self.name, self.model = name, model
        self.x, self.y = x.to(device), y.to(device)
        self.num_classes, self.input_shape = num_classes, tuple(x.shape[1:])
        self.batch_size, self.device, self.amp = batch_size, device, amp
        self.old = build_model(model, num_classes, self.input_shape, seed=0).to(device).eval()

    def recipe(self, epochs: int, lr: float = 0.05) -> TrainRecipe:
        return TrainRecipe(epochs=epochs, batch_size=self.batch_size, lr=lr, amp=self.amp)

    def context(self, recipe: TrainRecipe, x=None, y=None) -> UpdateContext:
        new_model = lambda init: copy.deepcopy(self.old)  # noqa: E731  (init "old": fine-tune M1)
        return UpdateContext(self.x if x is None else x, self.y if y is None else y, self.num_classes,
                             self.num_classes, self.old, new_model, recipe, 0, self.device)


def member_configs(n: int, recipe: TrainRecipe) -> list[tuple[dict, TrainRecipe]]:
    """n distinct fd configurations: hyperparameters and lr / weight decay vary."""
    lams, betas, dists = (0.5, 1.0, 2.0, 4.0), (0.0, 5.0), ("kl", "lm")
    out = []
    for i in range(n):
        hp = FD.resolve({"lambda": lams[i % 4], "beta": betas[(i // 4) % 2], "distance": dists[i % 2]})
        out.append((hp, recipe.with_overrides(lr=recipe.lr * (0.5 + (i % 5) * 0.25),
                                              weight_decay=(5e-4, 0.0, 1e-3)[i % 3])))
    return out


def build_pack(setup: Setup, configs, x=None, y=None):
    models, losses, recipes = [], [], []
    for hp, recipe in configs:
        ctx = setup.context(recipe, x, y)
        models.append(FD.initial_model(ctx, hp))
        losses.append(FD.make_loss(ctx, hp))
        recipes.append(recipe)
    return models, losses, recipes


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# What a variant's seconds are: "cpu" = this process's CPU seconds (with one torch thread,
# the work itself, unaffected by other jobs queueing on a shared machine's cores), "wall" =
# wall-clock seconds (what a dedicated machine, a GPU or several threads need). Set by main.
CLOCK = {"kind": "wall"}
WARMUP = {"runs": 1}  # untimed runs of each variant before the timed ones


def now() -> float:
    return time.process_time() if CLOCK["kind"] == "cpu" else time.perf_counter()


def run_pack(setup: Setup, configs, engine: str, x=None, y=None, whole: bool = False) -> float:
    """Seconds of fit_pack alone, or (`whole`) of the whole update: models and losses built
    as `LossMethod.update` builds them (M1's logits over D_update included), then fit_pack."""
    t0 = now()
    models, losses, recipes = build_pack(setup, configs, x, y)
    sync(setup.device)
    if not whole:
        t0 = now()
    fit_pack(models, setup.x if x is None else x, setup.y if y is None else y, recipes, seed=0,
             loss_fns=losses, engine=engine)
    sync(setup.device)
    return now() - t0


def run_solo(setup: Setup, configs, x=None, y=None, whole: bool = False) -> float:
    """Seconds of the solo `train.fit` runs alone, or (`whole`) of `LossMethod.update`."""
    total = 0.0
    for hp, recipe in configs:
        t0 = now()
        ctx = setup.context(recipe, x, y)
        model, loss = FD.initial_model(ctx, hp), FD.make_loss(ctx, hp)
        sync(setup.device)
        if not whole:
            t0 = now()
        ctx.fit(model, loss)
        sync(setup.device)
        total += now() - t0
    return total


def part_steps(setup: Setup, packs, steps: int, repeats: int, engine: str) -> None:
    n = steps * setup.batch_size
    x, y = setup.x[:n], setup.y[:n]
    print(f"\n[steps] {setup.name}: per-step time, one pack of K vs K solo train.fit steps "
          f"(fd, batch {setup.batch_size}, {steps} steps per run, engine {engine})")
    print(f"  {'K':>3} {'K solo steps':>14} {'1 pack step':>12} {'speed-up':>9}")
    for k in packs:
        configs = member_configs(k, setup.recipe(1))
        t = interleave({"pack": lambda: run_pack(setup, configs, engine, x, y),
                        "solo": lambda: run_solo(setup, configs, x, y)}, repeats, warmup=WARMUP["runs"], log=False)
        sp, ss = median(t["pack"]) / steps, median(t["solo"]) / steps
        print(f"  {k:>3} {ss * 1e3:>12.1f}ms {sp * 1e3:>10.1f}ms {ss / sp:>8.2f}x", flush=True)


def part_trials(setup: Setup, packs, epochs: int, repeats: int, engine: str) -> None:
    print(f"\n[trials] {setup.name}: trials/hour of whole fd updates ({epochs} epochs, "
          f"{len(setup.x)} samples, batch {setup.batch_size}, engine {engine}, amp {setup.amp})")
    variants = {}
    for p in packs:
        configs = member_configs(p, setup.recipe(epochs))
        variants[f"pack {p}"] = (lambda c=configs: run_pack(setup, c, engine, whole=True))
    solo_configs = member_configs(1, setup.recipe(epochs))
    variants["solo fit"] = lambda: run_solo(setup, solo_configs, whole=True)
    t = interleave(variants, repeats, warmup=WARMUP["runs"], log=False)
    base = 1 / median(t["pack 1"])
    print(f"  {'pack':>6} {'trials/hour':>12} {'vs pack 1':>10}")
    for p in packs:
        rate = p / median(t[f"pack {p}"])
        print(f"  {p:>6} {rate * 3600:>12.0f} {rate / base:>9.2f}x", flush=True)
    solo = 1 / median(t["solo fit"])
    print(f"  solo LossMethod.update (train.fit): {solo * 3600:.0f} trials/hour = {solo / base:.2f}x pack 1")


def part_shrink(setup: Setup, epochs: int, repeats: int, engine: str) -> None:
    """Pack of 8 whose members 4..7 stop after epoch 1 vs a pack of members 0..3: the
    seconds of epochs 2..E, timed by on_epoch."""
    configs = member_configs(8, setup.recipe(epochs))

    def timed(cfg, stop):
        marks = []

        def on_epoch(epoch, losses):
            sync(setup.device)
            marks.append(now())
            return stop if epoch == 1 else set()

        models, losses, recipes = build_pack(setup, cfg)
        fit_pack(models, setup.x, setup.y, recipes, seed=0, loss_fns=losses, engine=engine, on_epoch=on_epoch)
        return marks[-1] - marks[0]

    t = interleave({"8 shrunk to 4": lambda: timed(configs, {4, 5, 6, 7}),
                    "4 from the start": lambda: timed(configs[:4], set())}, repeats, warmup=WARMUP["runs"], log=False)
    a, b = median(t["8 shrunk to 4"]), median(t["4 from the start"])
    print(f"\n[shrink] {setup.name}: epochs 2..{epochs} of a pack of 8 after 4 stopped: {a:.2f}s; "
          f"a pack of those 4 from the start: {b:.2f}s; ratio {a / b:.2f}x (1.00 = no slow-down)")


def part_engines(setup: Setup, packs, steps: int, repeats: int) -> None:
    n = steps * setup.batch_size
    x, y = setup.x[:n], setup.y[:n]
    print(f"\n[engines] {setup.name}: per-step time of the two engines (fd, {steps} steps per run)")
    print(f"  {'K':>3} {'grouped':>10} {'vmap':>10} {'vmap/grouped':>13}")
    for k in packs:
        configs = member_configs(k, setup.recipe(1))
        t = interleave({e: (lambda e=e: run_pack(setup, configs, e, x, y)) for e in ("grouped", "vmap")},
                       repeats, warmup=WARMUP["runs"], log=False)
        g, v = median(t["grouped"]) / steps, median(t["vmap"]) / steps
        print(f"  {k:>3} {g * 1e3:>8.1f}ms {v * 1e3:>8.1f}ms {v / g:>12.2f}x", flush=True)


KERNELS = {  # profiler op names by class
    "conv": ("convolution", "conv2d", "mkldnn_conv", "cudnn_conv"),
    "pool": ("pool",),
    "matmul": ("mm", "bmm", "addmm", "baddbmm", "linear"),
    "relu": ("relu", "threshold", "clamp_min"),
}


def part_profile(setup: Setup, k: int, steps: int, engine: str) -> None:
    from torch.profiler import ProfilerActivity, profile

    n = steps * setup.batch_size
    x, y = setup.x[:n], setup.y[:n]
    configs = member_configs(k, setup.recipe(1))
    print(f"\n[profile] {setup.name}: self CPU time by kernel class, {steps} steps")
    for label, fn in ((f"{k} solo fits", lambda: run_solo(setup, configs, x, y)),
                      (f"1 pack of {k}", lambda: run_pack(setup, configs, engine, x, y))):
        fn()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fn()
        rows = prof.key_averages()
        total = sum(r.self_cpu_time_total for r in rows)
        share = {c: 0.0 for c in KERNELS}
        for r in rows:
            name = r.key.lower()
            for c, keys in KERNELS.items():
                if name.startswith("aten::") and any(s in name for s in keys):
                    share[c] += r.self_cpu_time_total
                    break
        kernel = sum(share.values())
        print(f"  {label:<16} {total / 1e3 / steps:8.1f}ms/step: "
              + ", ".join(f"{c} {v / total:5.1%}" for c, v in share.items())
              + f", everything else {1 - kernel / total:5.1%}")
        top = sorted(rows, key=lambda r: -r.self_cpu_time_total)[:8]
        print("    top ops: " + ", ".join(f"{r.key} {r.self_cpu_time_total / 1e3 / steps:.1f}ms" for r in top))


def load_fashion(data_root: str | None):
    """Fashion-MNIST from `data_root` (or Debian's folder); where neither has it (a bare GPU
    machine), the embedded fashion-mnist-mini (6,000 real training images), named as such."""
    try:
        return "fashion-mnist", load_dataset("fashion-mnist", data_root)
    except FlipsearchError as e:
        print(f"note: no Fashion-MNIST ({str(e).splitlines()[0][:120]}); using the embedded fashion-mnist-mini")
        return "fashion-mnist-mini", load_dataset("fashion-mnist-mini")


def make_setups(names, device, amp: bool, fashion_n: int, data_root: str | None = None) -> list[Setup]:
    out = []
    for name in names:
        if name == "digits":
            ds = load_dataset("digits")
            out.append(Setup("digits/small", "small", ds.x_train, ds.y_train, ds.num_classes, 32, device, amp))
        elif name == "fashion":
            label, full = load_fashion(data_root)
            ds = subsample(full, min(1.0, fashion_n / len(full.y_train)), seed=0)
            out.append(Setup(f"{label} {len(ds.y_train)}/cnn8", "cnn8", ds.x_train, ds.y_train,
                             ds.num_classes, 128, device, amp))
        else:
            raise SystemExit(f"unknown data set {name!r} (digits, fashion)")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", action="store_true", help="recipe amp: true (autocast + loss scaling on CUDA)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--datasets", nargs="+", default=["digits", "fashion"])
    ap.add_argument("--parts", nargs="+", default=["steps", "trials", "shrink", "engines"])
    ap.add_argument("--packs", nargs="+", type=int, default=[1, 2, 4, 8, 16])
    ap.add_argument("--epochs", type=int, default=4, help="epochs of a whole trial (trials, shrink)")
    ap.add_argument("--steps", type=int, default=8, help="steps per timed run (steps, engines, profile)")
    ap.add_argument("--fashion-n", type=int, default=2000, help="Fashion-MNIST training samples (stratified)")
    ap.add_argument("--data-root", default=None,
                    help="where Fashion-MNIST lies (default: torchvision's root, then Debian's folder; "
                         "neither: the embedded fashion-mnist-mini)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs of each variant first")
    ap.add_argument("--engine", default="auto")
    ap.add_argument("--profile", type=int, default=0, metavar="K", help="only profile a pack of K")
    ap.add_argument("--clock", choices=["auto", "cpu", "wall"], default="auto",
                    help="auto: CPU seconds with 1 thread on the CPU, else wall-clock seconds")
    args = parse_with_smoke(ap, ["--datasets", "digits", "--packs", "1", "2", "--epochs", "2", "--steps", "2",
                                 "--repeats", "1", "--warmup", "0"])
    set_threads(args.threads)
    device = torch.device(args.device)
    WARMUP["runs"] = args.warmup
    CLOCK["kind"] = (("cpu" if args.threads == 1 and device.type == "cpu" else "wall")
                     if args.clock == "auto" else args.clock)
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    print(machine() + f", device {device}{gpu}, timing {CLOCK['kind']} seconds")
    for setup in make_setups(args.datasets, device, args.amp, args.fashion_n, args.data_root):
        # one-off costs (kernel selection, lazy initialisation) out of the timed runs; only the
        # engines the parts time (the vmap engine under AMP need not run for a grouped figure)
        tiny = member_configs(2, setup.recipe(1))
        xs, ys = setup.x[:2 * setup.batch_size], setup.y[:2 * setup.batch_size]
        for e in (("grouped", "vmap") if "engines" in args.parts else (args.engine,)):
            run_pack(setup, tiny, e, xs, ys, whole=True)
        run_solo(setup, tiny, xs, ys, whole=True)
        if args.profile:
            part_profile(setup, args.profile, args.steps, args.engine)
            continue
        for part in args.parts:
            if part == "steps":
                part_steps(setup, args.packs, args.steps, args.repeats, args.engine)
            elif part == "trials":
                part_trials(setup, args.packs, args.epochs, args.repeats, args.engine)
            elif part == "shrink":
                part_shrink(setup, args.epochs, args.repeats, args.engine)
            elif part == "engines":
                part_engines(setup, args.packs, args.steps, args.repeats)
            else:
                raise SystemExit(f"unknown part {part!r}")


if __name__ == "__main__":
    main()
