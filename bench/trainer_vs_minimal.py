"""Target 1: flipsearch's training loop vs a minimal hand-written PyTorch loop.

Both train the same model (same initial weights) on the same in-memory tensors with the
same batch size, optimiser (SGD, momentum 0.9, weight decay 5e-4), seed and epochs; the
minimal loop is the textbook one: seeded permutation, slice, forward, cross-entropy,
zero_grad, backward, step. The runs are interleaved and the figure is

    ratio = median samples/s of `flipsearch.train.fit` / median samples/s of the minimal loop

per case (cnn8 on a Fashion-MNIST subset; small on the embedded digits); target >= 0.9.
As both loops draw the same permutation and dropout masks, their final weights must agree:
the script checks it, which proves they did the same work.

    python bench/trainer_vs_minimal.py [--fm-samples 5000] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse

import _timing  # noqa: F401  (puts the checkout on sys.path)
from _timing import interleave, machine, median, parse_with_smoke, set_threads, spread

import torch
import torch.nn.functional as F

from flipsearch.data import load_dataset
from flipsearch.models import build_model
from flipsearch.train import TrainRecipe, fit


def minimal_loop(model, x, y, epochs: int, batch_size: int, lr: float, seed: int) -> None:
    """The hand-written reference loop (what a user would write without flipsearch)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for s in range(0, len(x), batch_size):
            i = perm[s:s + batch_size]
            loss = F.cross_entropy(model(x[i]), y[i])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def run_case(name: str, model_name: str, x, y, n_classes: int, recipe: TrainRecipe, repeats: int) -> float:
    init = build_model(model_name, n_classes, tuple(x.shape[1:]), seed=0).state_dict()
    models = {}

    def fresh():
        m = build_model(model_name, n_classes, tuple(x.shape[1:]))
        m.load_state_dict(init)
        return m

    def trainer():
        models["flipsearch"] = m = fresh()
        fit(m, x, y, recipe, seed=1)

    def minimal():
        models["minimal"] = m = fresh()
        minimal_loop(m, x, y, recipe.epochs, recipe.batch_size, recipe.lr, seed=1)

    print(f"[{name}] {len(x)} samples x {recipe.epochs} epochs, batch {recipe.batch_size}", flush=True)
    times = interleave({"flipsearch.fit": trainer, "minimal loop": minimal}, repeats)
    a, b = models["flipsearch"].state_dict(), models["minimal"].state_dict()
    same = all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)
    samples = len(x) * recipe.epochs
    ratio = (samples / median(times["flipsearch.fit"])) / (samples / median(times["minimal loop"]))
    print(f"[{name}] fit {spread(times['flipsearch.fit'])}  minimal {spread(times['minimal loop'])}  "
          f"same final weights: {same}  ratio {ratio:.3f}", flush=True)
    if not same:
        raise SystemExit(f"[{name}] the two loops did different work: their final weights differ")
    return ratio


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fm-samples", type=int, default=5000, help="Fashion-MNIST training samples used")
    ap.add_argument("--fm-epochs", type=int, default=1)
    ap.add_argument("--digits-epochs", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (a sweep trial's cpus)")
    args = parse_with_smoke(ap, ["--fm-samples", "256", "--digits-epochs", "1", "--repeats", "1"])
    set_threads(args.threads)
    print(machine(), flush=True)

    digits = load_dataset("digits")
    r_digits = run_case("small+digits", "small", digits.x_train, digits.y_train, digits.num_classes,
                        TrainRecipe(epochs=args.digits_epochs, batch_size=32, lr=0.05), args.repeats + 2)
    fm = load_dataset("fashion-mnist")
    n = min(args.fm_samples, len(fm.x_train))
    r_fm = run_case("cnn8+fashion-mnist", "cnn8", fm.x_train[:n].contiguous(), fm.y_train[:n].contiguous(),
                    fm.num_classes, TrainRecipe(epochs=args.fm_epochs, batch_size=128, lr=0.05), args.repeats)
    worst = min(r_fm, r_digits)
    print(f"trainer vs minimal loop (samples/s ratio, target >= 0.9): cnn8+fashion-mnist {r_fm:.3f}x, "
          f"small+digits {r_digits:.3f}x -> {'PASS' if worst >= 0.9 else 'MISS'}")


if __name__ == "__main__":
    main()
