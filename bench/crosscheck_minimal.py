"""An independent cross-check of flipsearch's figures with a minimal plain-PyTorch pipeline.

This script has its own split code, model definition, training loop, losses and metrics;
from flipsearch it imports only the idx reader (to read Debian's Fashion-MNIST files) and,
inside `flipsearch_figures`, `run_trial`. For each method -- `ce`, `bct` (new-error, λ_c = 1)
and `fd` (LM distance, α = 1, β = 5, λ = 1) -- it trains M1 and the update on Fashion-MNIST
`exclusive-op` (D_train : D_update = 1 : 4, disjoint, stratified, after setting aside a
validation split of 10 % of D_update that nothing trains on) with the same pool and test
sizes, model architecture (`compact`), epochs, batch size and optimiser as the flipsearch
trial, over several seeds, and prints both pipelines' accuracy_new / NFR / BR as mean ± std.

The pipelines draw different samples (different RNG streams), so they are compared as
estimates of the same quantity, each with two sources of noise: the seed-to-seed spread
(sd²/k over k seeds) and the one fixed test subset each evaluates on (like flipsearch's
`--scale`, the minimal pipeline draws its test subset once), whose offset from the whole
test set has variance ≈ p(1 − p)/n for a rate p over n samples (n(P1) for BR). They agree
when |difference| <= z · se with se² the sum of the four terms and z = 2.77: a 5 %
family-wise level over the 9 comparisons (Bonferroni, two-sided 0.05/9 each).

    python bench/crosscheck_minimal.py                    # scale 0.1, 3 seeds, 5 epochs
    python bench/crosscheck_minimal.py --scale 0.05 --epochs 3 --seeds 0 1 2
    python bench/crosscheck_minimal.py --test-scale 1     # the whole test set: less subset noise
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flipsearch.data.torchvision_sets import read_idx  # noqa: E402  (the only other import)

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
BATCH, LR, MOMENTUM, WEIGHT_DECAY, GRAD_CLIP = 128, 0.05, 0.9, 5e-4, 2.0
VAL_FRACTION = 0.1  # a validation split of this share of D_update is set aside, trained on by nobody
TEST_SUBSET_SEED = 12345  # the minimal pipeline's one test subset, independent of the scenario seeds
Z = 2.77  # two-sided 0.05 / 9 comparisons
METHODS = {  # flipsearch method name -> its hyperparameters
    "ce": {},
    "bct": {"lambda_c": 1.0, "variant": "new-error"},
    "fd": {"distance": "lm", "alpha": 1.0, "beta": 5.0, "lambda": 1.0},
}
_STORES: dict = {}


def flipsearch_figures(method: str, hparams: dict, seed: int, scale: float, epochs: int,
                       test_scale: float | None = None) -> dict[str, float]:
    """flipsearch's test accuracy_new / nfr / br for one trial (M1 shared across a seed's
    methods). The one place that knows flipsearch's TrialConfig API."""
    from flipsearch.references import ReferenceStore
    from flipsearch.trial import TrialConfig, run_trial

    cfg = TrialConfig(dataset="fashion-mnist", arrangement="exclusive-op", method=method, seed=seed,
                      model="compact", scale=scale, test_scale=scale if test_scale is None else test_scale,
                      val_fraction=VAL_FRACTION).with_settings(
        {**hparams, "epochs": epochs, "batch_size": BATCH, "lr": LR, "momentum": MOMENTUM,
         "weight_decay": WEIGHT_DECAY, "optimizer": "sgd", "grad_clip": GRAD_CLIP})
    result = run_trial(cfg, store=_STORES.setdefault(seed, ReferenceStore()))
    if result.status != "ok":
        raise RuntimeError(f"flipsearch {method} seed {seed}: {result.status} {result.error}")
    figures = {k: result.metrics[k] for k in ("accuracy_new", "nfr", "br")}
    return {**figures, "n_p1": result.metrics["accuracy_old"] * result.metrics["n"]}


# ----------------------------------------------------------------------------- minimal pipeline

def load_fashion_mnist() -> tuple[np.ndarray, ...]:
    files = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
             "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
    out = []
    for split in ("train", "test"):
        out.append(read_idx(DEBIAN / files[split][0], 0x00000803))
        out.append(read_idx(DEBIAN / files[split][1], 0x00000801).astype(np.int64))
    return tuple(out)


def per_class_take(y: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """About `share` of each class (rounded per class), chosen at random; sorted indices."""
    picked = []
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        picked.append(rng.choice(rows, size=int(round(share * rows.size)), replace=False))
    return np.sort(np.concatenate(picked))


class Compact(nn.Module):
    """The same architecture as flipsearch's `compact`, written out again."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.ReLU(), nn.Flatten(),
            nn.Linear(32 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, classes))

    def forward(self, x):
        return self.body(x)


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int, loss_of) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(BATCH):
            loss = loss_of(model(x[idx]), y[idx], idx)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
            opt.step()
    model.eval()


@torch.no_grad()
def logits_of(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i:i + 1000]) for i in range(0, len(x), 1000)])


def make_loss(method: str, old_logits: torch.Tensor):
    def ce(z, y, idx):
        return F.cross_entropy(z, y)

    def bct(z, y, idx):  # new-error: CE + 1 · mean CE over the batch samples M1 gets right
        right = old_logits[idx].argmax(1) == y
        extra = F.cross_entropy(z[right], y[right]) if right.any() else z.sum() * 0
        return F.cross_entropy(z, y) + 1.0 * extra

    def fd(z, y, idx):  # CE + 1 · mean[(1 + 5·[M1 right]) · ½ mean_c (z − z_old)²]
        zo = old_logits[idx]
        w = 1.0 + 5.0 * (zo.argmax(1) == y).float()
        return F.cross_entropy(z, y) + 1.0 * (w * 0.5 * ((z - zo) ** 2).mean(1)).mean()

    return {"ce": ce, "bct": bct, "fd": fd}[method]


def minimal_figures(data, seed: int, scale: float, epochs: int, test_scale: float) -> dict[str, dict[str, float]]:
    """accuracy_new / nfr / br of each method for one seed, by the minimal pipeline."""
    x_tr, y_tr, x_te, y_te = data
    test = per_class_take(y_te, test_scale, np.random.default_rng(TEST_SUBSET_SEED))
    rng = np.random.default_rng(1000 + seed)
    pool = per_class_take(y_tr, scale, rng)
    # as flipsearch does: a validation split of VAL_FRACTION of D_update's share (4/5) set
    # aside from the pool first (no model trains on it), then D_train : D_update = 1 : 4
    pool = np.setdiff1d(pool, pool[per_class_take(y_tr[pool], VAL_FRACTION * 0.8, rng)])
    d_train = np.sort(pool[per_class_take(y_tr[pool], 0.2, rng)])
    d_update = np.setdiff1d(pool, d_train)
    mean, std = x_tr.mean() / 255.0, x_tr.std() / 255.0  # statistics of the whole training file
    as_x = lambda a: ((torch.from_numpy(a).float() / 255.0 - mean) / std).unsqueeze(1)  # noqa: E731
    xa, ya = as_x(x_tr[d_train]), torch.from_numpy(y_tr[d_train])
    xu, yu = as_x(x_tr[d_update]), torch.from_numpy(y_tr[d_update])
    xt, yt = as_x(x_te[test]), torch.from_numpy(y_te[test])

    torch.manual_seed(seed)
    m1 = Compact()
    train(m1, xa, ya, epochs, seed, lambda z, y, idx: F.cross_entropy(z, y))
    old_u, right1 = logits_of(m1, xu), logits_of(m1, xt).argmax(1) == yt
    out = {}
    for method in METHODS:
        m2 = copy.deepcopy(m1)
        train(m2, xu, yu, epochs, seed + 1, make_loss(method, old_u))
        right2 = logits_of(m2, xt).argmax(1) == yt
        neg = int((right1 & ~right2).sum())
        out[method] = {"accuracy_new": float(right2.float().mean()), "nfr": neg / len(yt),
                       "br": neg / int(right1.sum()) if int(right1.sum()) else math.nan,
                       "n_p1": float(right1.sum())}
    return out


# ----------------------------------------------------------------------------- comparison

def summary(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def subset_variance(p: float, n: float) -> float:
    """Variance of a rate p's offset on one fixed test subset of n samples: p(1 − p)/n."""
    return p * (1 - p) / n if n else math.nan


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=0.1, help="share of the pool and of the test set")
    ap.add_argument("--test-scale", type=float, default=None, help="share of the test set (default: --scale)")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1)
    smoke = ["--scale", "0.01", "--epochs", "1", "--seeds", "0"]
    ap.add_argument("--smoke", action="store_true",
                    help=f"smallest sizes ({' '.join(smoke)}): a check that the script runs; its figures mean nothing")
    args = ap.parse_args(argv)
    if args.smoke:
        args = ap.parse_args([*smoke, *(sys.argv[1:] if argv is None else argv)])
    torch.set_num_threads(args.threads)
    test_scale = args.scale if args.test_scale is None else args.test_scale
    t0 = time.perf_counter()
    data = load_fashion_mnist()
    keys = ("accuracy_new", "nfr", "br", "n_p1")
    ours: dict = {m: {k: [] for k in keys} for m in METHODS}
    theirs: dict = {m: {k: [] for k in keys} for m in METHODS}
    for seed in args.seeds:
        for method, figs in minimal_figures(data, seed, args.scale, args.epochs, test_scale).items():
            for k, v in figs.items():
                ours[method][k].append(v)
        for method, hp in METHODS.items():
            for k, v in flipsearch_figures(method, hp, seed, args.scale, args.epochs, test_scale).items():
                theirs[method][k].append(v)
        print(f"seed {seed} done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)

    n_test = round(test_scale * 10000)
    k = len(args.seeds)
    print(f"Fashion-MNIST exclusive-op, scale {args.scale} (pool {round(args.scale * 60000)}, test {n_test}), "
          f"model compact, {args.epochs} epochs, batch {BATCH}, SGD lr {LR} momentum {MOMENTUM} wd "
          f"{WEIGHT_DECAY}, grad clip {GRAD_CLIP}; seeds {args.seeds}; {args.threads} torch thread(s); "
          f"torch {torch.__version__}")
    print("methods: ce; bct new-error lambda_c=1; fd lm alpha=1 beta=5 lambda=1. Figures in %, mean ± std over seeds.")
    print(f"agree = |mean difference| <= {Z} se; se² = sd_a²/k + sd_b²/k + p_a(1-p_a)/n_a + p_b(1-p_b)/n_b "
          f"(seed spread + each pipeline's fixed test subset of {n_test}; n = n(P1) for BR)")
    print()
    print(f"{'method':7s} {'metric':13s} {'minimal':>15s} {'flipsearch':>15s} {'diff':>7s} {'se':>6s}  verdict")
    all_agree = True
    for method in METHODS:
        for key in ("accuracy_new", "nfr", "br"):
            (ma, sa), (mb, sb) = summary(ours[method][key]), summary(theirs[method][key])
            na = statistics.mean(ours[method]["n_p1"]) if key == "br" else n_test
            nb = statistics.mean(theirs[method]["n_p1"]) if key == "br" else n_test
            se = math.sqrt(sa ** 2 / k + sb ** 2 / k + subset_variance(ma, na) + subset_variance(mb, nb))
            ok = abs(ma - mb) <= Z * se
            all_agree &= ok
            print(f"{method:7s} {key:13s} {100 * ma:7.2f} ± {100 * sa:5.2f} {100 * mb:7.2f} ± {100 * sb:5.2f} "
                  f"{100 * (mb - ma):+7.2f} {100 * se:6.2f}  {'agree' if ok else 'DIFFER'}")
    # the method effects, as each pipeline sees them
    for name, figs in (("minimal", ours), ("flipsearch", theirs)):
        effects = ", ".join(f"{m} NFR - ce NFR = {100 * (summary(figs[m]['nfr'])[0] - summary(figs['ce']['nfr'])[0]):+.2f} %"
                            for m in ("bct", "fd"))
        print(f"{name:10s}: {effects}")
    print(f"\nall figures agree within seed noise: {'yes' if all_agree else 'NO'} "
          f"({time.perf_counter() - t0:.0f} s)")
    return 0 if all_agree else 1


if __name__ == "__main__":
    raise SystemExit(main())
