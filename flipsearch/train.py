"""The one training loop every update method shares.

Data lives in tensors on the training device; each epoch draws a seeded permutation and
slices mini-batches from it. A method changes *what is minimised* by passing a
`loss_fn(logits, batch)`; nothing else about the loop changes per method.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Callable, Iterator, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .errors import DivergedError, UsageError
from .values import coerce


@dataclass(frozen=True)
class TrainRecipe:
    """How a model is trained: optimiser, schedule, epochs, batch size, augmentation."""

    epochs: int = 5
    batch_size: int = 128
    lr: float = 0.05
    optimizer: str = "sgd"  # sgd | adam
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "none"  # none | cosine
    augment: bool = False  # random crop (pad 4) + horizontal flip, on the device
    amp: bool = False  # mixed precision (CUDA only; ignored on CPU)
    grad_clip: float = 0.0  # clip the global gradient norm to this; 0 = off


    def __post_init__(self):
        # Every field is coerced strictly to its declared type: `epochs: 2.7`, `epochs: true`
        # or `lr: true` are refused, not silently turned into 2, 1 or 1.0.
        for f in fields(self):
            kind = type(f.default)
            object.__setattr__(self, f.name, coerce(getattr(self, f.name), kind, f"training setting {f.name}"))
        checks = [
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.lr > 0, "lr must be a positive number"),
            (self.optimizer in ("sgd", "adam"), "optimizer must be 'sgd' or 'adam'"),
            (0 <= self.momentum < 1, "momentum must be in [0, 1)"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (self.schedule in ("none", "cosine"), "schedule must be 'none' or 'cosine'"),
            (self.grad_clip >= 0, "grad_clip must be >= 0 (0 turns it off)"),
        ]
        for ok, msg in checks:
            if not ok:
                raise UsageError(f"training recipe: {msg}")

    @classmethod
    def from_dict(cls, values: dict) -> "TrainRecipe":
        return cls().with_overrides(**values)

    def with_overrides(self, **kw) -> "TrainRecipe":
        known = {f.name for f in fields(self)}
        for k in kw:
            if k not in known:
                raise UsageError(f"unknown training setting {k!r}; known: {', '.join(sorted(known))}")
        return replace(self, **kw)

    def as_dict(self) -> dict:
        return asdict(self)


class Batch(NamedTuple):
    """One mini-batch: inputs as fed to the model, labels, and their indices in the
    training tensors (so a method can look up precomputed teacher logits)."""

    x: torch.Tensor
    y: torch.Tensor
    idx: torch.Tensor
    augmented: bool


LossFn = Callable[[torch.Tensor, Batch], torch.Tensor]


def cross_entropy(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """The plain cross-entropy loss of a batch (the `ce` method's loss)."""
    return F.cross_entropy(logits, batch.y)


@dataclass
class FitResult:
    """What `fit` returns: the loss per epoch, the last epochs' weights, seconds, and the epoch training was
    stopped after (if it was)."""
    epoch_losses: list[float] = field(default_factory=list)
    history: list[dict[str, torch.Tensor]] = field(default_factory=list)  # last k epochs' weights
    seconds: float = 0.0
    stopped_at: int | None = None  # the epoch `epoch_end` stopped training after, if it did


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch's global generator with `seed` and return a fresh generator seeded the same."""
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def augment_batch(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random crop with 4-pixel zero padding and horizontal flip, batched on x's device."""
    draws = augment_draws(len(x), len(x), gen).to(x.device)
    return crop_flip(x, draws[0], draws[1], draws[2].bool())


def augment_draws(n: int, batch_size: int, gen: torch.Generator) -> torch.Tensor:
    """An epoch's crop offsets and flips for `n` samples in batches of `batch_size`, as one
    int64 tensor [3, n] (dx, dy, flip) on the CPU: drawn from `gen` batch by batch in the
    order a per-batch draw takes them (dx, dy, then flips), so the values are the same as
    drawing each batch's as it comes, but reach the device in one copy per epoch."""
    rows = []
    for start in range(0, n, batch_size):
        m = min(batch_size, n - start)
        dx = torch.randint(0, 9, (m,), generator=gen)
        dy = torch.randint(0, 9, (m,), generator=gen)
        flip = (torch.rand(m, generator=gen) < 0.5).long()
        rows.append(torch.stack([dx, dy, flip]))
    return torch.cat(rows, dim=1) if rows else torch.zeros(3, 0, dtype=torch.int64)


def crop_flip(x: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Each image of x zero-padded by 4, cropped back at offsets (dx, dy) in [0, 8] and
    mirrored where `flip`; every argument on x's device."""
    n, _, h, w = x.shape
    padded = F.pad(x, (4, 4, 4, 4))
    rows = (dy[:, None] + torch.arange(h, device=x.device)[None])  # n, h
    cols = (dx[:, None] + torch.arange(w, device=x.device)[None])  # n, w
    out = padded[torch.arange(n, device=x.device)[:, None, None, None],
                 torch.arange(x.shape[1], device=x.device)[None, :, None, None],
                 rows[:, None, :, None], cols[:, None, None, :]]
    return torch.where(flip[:, None, None, None], out.flip(-1), out)


def make_optimizer(model: nn.Module, recipe: TrainRecipe) -> torch.optim.Optimizer:
    """The recipe's optimizer over the trainable parameters: AdamW (decoupled weight decay) for "adam", else
    SGD with momentum."""
    params = [p for p in model.parameters() if p.requires_grad]
    if recipe.optimizer == "adam":  # decoupled weight decay (AdamW), not Adam's coupled L2
        return torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum,
                           weight_decay=recipe.weight_decay)


def make_scheduler(opt: torch.optim.Optimizer, recipe: TrainRecipe,
                   steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The recipe's learning-rate schedule, stepped once per batch (None for a constant lr)."""
    if recipe.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=recipe.epochs * steps_per_epoch)
    return None


def epoch_batches(x: torch.Tensor, y: torch.Tensor, recipe: TrainRecipe,
                  gen: torch.Generator) -> Iterator[Batch]:
    """One epoch's mini-batches: a permutation drawn from `gen`, sliced in order, each batch
    augmented (drawing from `gen` too) when the recipe says so. `fit` and `pack.fit_pack`
    both draw their batches here, so the same seed gives the same batches. The epoch's
    augmentation is drawn with its permutation and moved to the device once."""
    order = torch.randperm(len(x), generator=gen).to(x.device)
    draws = augment_draws(len(x), recipe.batch_size, gen).to(x.device) if recipe.augment else None
    for start in range(0, len(x), recipe.batch_size):
        idx = order[start:start + recipe.batch_size]
        xb = x[idx]
        if draws is not None:
            d = draws[:, start:start + recipe.batch_size]
            xb = crop_flip(xb, d[0], d[1], d[2].bool())
        yield Batch(xb, y[idx], idx, recipe.augment)


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, recipe: TrainRecipe, *, seed: int,
        loss_fn: LossFn = cross_entropy, keep_history: int = 0,
        epoch_end: Callable[[int, float, nn.Module], bool] | None = None,
        _force_loss_scaling: bool = False) -> FitResult:
    """Train `model` in place on `(x, y)` (already on the model's device).

    `keep_history=k` keeps CPU copies of the weights after each of the last k epochs
    (NeuRecover needs the last two). An epoch whose loss is NaN/inf raises `DivergedError`
    after it. Under AMP the epoch loss averages the steps the gradient scaler took: a step
    it skipped (fp16 overflow; it lowers the scale and goes on) is no divergence, and an
    epoch of only skipped steps is one.
    `epoch_end(epoch, loss, model)` runs after each epoch (1-based; the model is in eval
    mode during the call) and returns True to stop there: `FitResult.stopped_at` says when.
    `_force_loss_scaling` runs the AMP loss scaler without autocast, on any device (tests).
    """
    import time

    t0 = time.perf_counter()
    gen = seed_everything(seed)
    device = x.device
    model.train()
    opt = make_optimizer(model, recipe)
    steps_per_epoch = math.ceil(len(x) / recipe.batch_size)
    sched = make_scheduler(opt, recipe, steps_per_epoch)
    use_amp = recipe.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type) if (use_amp or _force_loss_scaling) else None
    result = FitResult()
    for epoch in range(recipe.epochs):
        total = torch.zeros((), device=device)
        counted = 0  # samples of the steps taken (all of them without a scaler)
        for batch in epoch_batches(x, y, recipe, gen):
            idx = batch.idx
            with torch.autocast(device.type, enabled=use_amp):
                loss = loss_fn(model(batch.x), batch)
            opt.zero_grad(set_to_none=True)
            taken = True
            if scaler is not None:
                scale = scaler.get_scale()  # the step below syncs to decide on skipping anyway
                scaler.scale(loss).backward()
                if recipe.grad_clip:
                    scaler.unscale_(opt)
                    nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
                scaler.step(opt)
                scaler.update()
                taken = scaler.get_scale() >= scale  # the scale drops only when the step was skipped
            else:
                loss.backward()
                if recipe.grad_clip:
                    nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
                opt.step()
            if sched is not None:
                sched.step()
            if taken:
                total += loss.detach() * len(idx)
                counted += len(idx)
        epoch_loss = float(total) / counted if counted else math.nan  # one device sync per epoch, not per step
        if not math.isfinite(epoch_loss):
            raise DivergedError(f"training loss became {epoch_loss} in epoch {epoch + 1}")
        result.epoch_losses.append(epoch_loss)
        if keep_history and epoch >= recipe.epochs - keep_history:
            result.history.append({k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()})
        if epoch_end is not None:
            model.eval()
            stop = epoch_end(epoch + 1, epoch_loss, model)
            model.train()
            if stop:
                result.stopped_at = epoch + 1
                break
    model.eval()
    result.seconds = time.perf_counter() - t0
    return result


EVAL_BATCH = 1024  # evaluation batch unless FLIPSEARCH_EVAL_BATCH says otherwise
EVAL_BATCH_ENV = "FLIPSEARCH_EVAL_BATCH"


def eval_batch_size() -> int:
    """The evaluation batch: `FLIPSEARCH_EVAL_BATCH` (a positive integer) or EVAL_BATCH."""
    import os

    text = os.environ.get(EVAL_BATCH_ENV, "").strip()
    if not text:
        return EVAL_BATCH
    if not text.isdigit() or int(text) < 1:
        raise UsageError(f"{EVAL_BATCH_ENV}={text!r}: give a positive integer (samples per evaluation batch)")
    return int(text)


@torch.inference_mode()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """Logits of `model` (in eval mode) over `x`, batched, as float32 on x's device.

    `batch_size` defaults to `eval_batch_size()`. A batch that runs out of CUDA memory
    (large images, resnet18's stride-1 stem) is retried at half the size, which the rest
    of the pass keeps; only a batch of one that does not fit is an error."""
    size = batch_size or eval_batch_size()
    was_training = model.training
    model.eval()
    parts, i = [], 0
    while i < len(x):
        try:
            parts.append(model(x[i:i + size]).float())
        except torch.cuda.OutOfMemoryError:
            if size == 1:
                raise
            size = max(1, size // 2)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        i += len(parts[-1])
    model.train(was_training)
    return torch.cat(parts) if parts else model(x).float()


def pick_device(prefer: str = "auto") -> torch.device:
    """`cuda` when present (Ray sets CUDA_VISIBLE_DEVICES to the trial's GPU), else CPU."""
    if prefer == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(prefer)
