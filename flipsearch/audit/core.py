"""The flip audit of two models on one split: every metric with its count and denominator,
the flip matrix, per-class rates and one row per flipped sample.

`flip_audit` predicts once per model and derives everything from the per-sample labels and
probabilities; its metric values equal `flipsearch.metrics.compute_metrics` on the same
predictions (same names, same NaN for a zero denominator), each kept as a `Rate` so a page
can say "NFR 0.37 % = 2 / 539" instead of a bare number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..metrics import CRITICAL_PREFIX, OLD_CLASSES_SUFFIX, metric_names

FLIP_COLUMNS = ("sample_index", "label", "label_name", "old_pred", "old_pred_name", "new_pred",
                "new_pred_name", "old_p_pred", "new_p_pred", "old_p_true", "new_p_true", "kind", "critical")


@dataclass(frozen=True)
class Rate:
    """A metric as the ratio it is: `count / denominator` (NaN when the denominator is 0).

    Counts and denominators are whole numbers except for `nfr_rel`, whose denominator is
    the number of negative flips expected if the two models erred independently
    (n · acc_old · er_new = n(P1) · n(N2) / n)."""

    count: int | float
    denominator: int | float

    @property
    def value(self) -> float:
        return float(self.count) / float(self.denominator) if self.denominator != 0 else float("nan")

    def to_json(self) -> dict[str, Any]:
        v = self.value
        return {"value": None if math.isnan(v) else v, "count": _plain(self.count),
                "denominator": _plain(self.denominator)}


def _plain(x: int | float) -> int | float:
    if isinstance(x, (int, np.integer)):
        return int(x)
    x = float(x)
    return int(x) if x.is_integer() else round(x, 6)


def _rates(ok_old: np.ndarray, ok_new: np.ndarray) -> dict[str, Rate | int]:
    """The base metrics of `compute_metrics` as rates (same formulas, METHODS.md §2)."""
    n = int(ok_old.size)
    p1, p2 = int(ok_old.sum()), int(ok_new.sum())
    both_right = int(np.count_nonzero(ok_old & ok_new))
    neg, pos = p1 - both_right, p2 - both_right
    both_wrong = n - p1 - pos
    n1, n2 = n - p1, n - p2
    return {
        "accuracy_old": Rate(p1, n), "accuracy_new": Rate(p2, n),
        "er_old": Rate(n1, n), "er_new": Rate(n2, n),
        "nfr": Rate(neg, n), "pfr": Rate(pos, n),
        "br": Rate(neg, p1), "btc": Rate(both_right, p1),
        "bec": Rate(both_wrong, n2), "bec_n1": Rate(both_wrong, n1),
        "accuracy_ratio": Rate(p1, p2), "accuracy_gain": Rate(p2 - p1, n),
        "nfr_rel": Rate(neg, p1 * n2 / n if n else 0),
        "n_negative_flips": neg, "n_positive_flips": pos, "n": n,
        "n_correct_old": p1, "n_correct_new": p2, "n_errors_old": n1, "n_errors_new": n2, "n_both_wrong": both_wrong,
    }


def format_metric(name: str, m: Rate | int) -> str:
    """'0.37 % (2 / 539)' for a rate in [0, 1], '+1.86 %' for the gain, '0.98 (503 / 513)'
    for the accuracy ratio, '0.52 (2 / 3.85 expected)' for nfr_rel, '2' for a count."""
    if not isinstance(m, Rate):
        return str(m)
    base = name.removeprefix(CRITICAL_PREFIX).removesuffix(OLD_CLASSES_SUFFIX)
    v = m.value
    if math.isnan(v):
        return f"n/a ({_plain(m.count)} / {_plain(m.denominator)})"
    if base == "accuracy_gain":
        return f"{v * 100:+.2f} % ({_plain(m.count):+d} / {_plain(m.denominator)})"
    if base == "nfr_rel":
        return f"{v:.2f} ({_plain(m.count)} / {m.denominator:.2f} expected)"
    if base == "accuracy_ratio":
        return f"{v:.4f} ({_plain(m.count)} / {_plain(m.denominator)})"
    return f"{v * 100:.2f} % ({_plain(m.count)} / {_plain(m.denominator)})"


@dataclass(frozen=True)
class Predictions:
    """One model's view of a split: predicted class, its probability, the true class's."""

    pred: np.ndarray  # int64 [N]
    p_pred: np.ndarray  # float32 [N]
    p_true: np.ndarray  # float32 [N]; 0 where the true class is not one of the model's outputs
    num_outputs: int


@torch.inference_mode()
def predict(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> Predictions:
    """Softmax predictions of `model` (eval mode, restored afterwards) over `x`, batched on
    the model's device."""
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else x.device
    was_training = model.training
    model.eval()
    preds, p_pred, p_true, width = [], [], [], None
    try:
        for i in range(0, len(x), batch_size):
            logits = model(x[i:i + batch_size].to(device))
            if logits.dim() != 2:
                raise ValueError(f"model output must be [batch, classes] logits, got shape {tuple(logits.shape)}")
            width = logits.shape[1]
            prob = logits.float().softmax(dim=1)
            conf, pred = prob.max(dim=1)
            yb = y[i:i + batch_size].to(device)
            known = yb < width
            pt = torch.zeros_like(conf)
            pt[known] = prob[known].gather(1, yb[known, None]).squeeze(1)
            preds.append(pred.cpu())
            p_pred.append(conf.cpu())
            p_true.append(pt.cpu())
    finally:
        model.train(was_training)
    if width is None:
        raise ValueError("cannot audit an empty split")
    return Predictions(torch.cat(preds).numpy().astype(np.int64), torch.cat(p_pred).numpy(),
                       torch.cat(p_true).numpy(), int(width))


@dataclass(frozen=True, eq=False)
class FlipAudit:
    """What changed between M1 (old) and M2 (new) on one split.

    `metrics` maps every `compute_metrics` name to a `Rate` (or an int for the counts
    `n_negative_flips`, `n_positive_flips`, `n`). `flip_matrix[t, p]` counts the negative
    flips of true class t that M2 predicts as p. `per_class` has one row per class;
    `flips` one row per flipped sample (columns `FLIP_COLUMNS`). `meta` says what was
    compared (paths, dataset, split, model) when `compare` made the audit."""

    class_names: tuple[str, ...]
    y: np.ndarray
    old: Predictions
    new: Predictions
    critical_mask: np.ndarray | None
    old_num_classes: int
    metrics: dict[str, Rate | int]
    flip_matrix: np.ndarray
    per_class: pd.DataFrame
    flips: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.y.size)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def negative(self) -> np.ndarray:
        """Bool [N]: M1 right and M2 wrong."""
        return (self.old.pred == self.y) & (self.new.pred != self.y)

    @property
    def positive(self) -> np.ndarray:
        """Bool [N]: M1 wrong and M2 right."""
        return (self.old.pred != self.y) & (self.new.pred == self.y)

    @property
    def critical_classes(self) -> tuple[int, ...]:
        """Classes with at least one critical sample."""
        if self.critical_mask is None:
            return ()
        return tuple(int(c) for c in np.unique(self.y[self.critical_mask]))

    def metric_values(self) -> dict[str, float]:
        """{name: float}, equal to `compute_metrics` on the same labels and predictions."""
        return {k: (m.value if isinstance(m, Rate) else float(m)) for k, m in self.metrics.items()}

    def top_cells(self, k: int = 5) -> list[tuple[int, int, int]]:
        """The k largest flip-matrix cells as (true class, M2's prediction, count), count > 0."""
        flat = self.flip_matrix.ravel()
        order = np.argsort(-flat, kind="stable")[:k]
        c = self.flip_matrix.shape[1]
        return [(int(i // c), int(i % c), int(flat[i])) for i in order if flat[i] > 0]

    def summary(self, top: int = 5) -> str:
        """A few terminal lines: what was compared, the metrics with counts, the top cells."""
        m = self.metrics
        f = lambda k: format_metric(k, m[k])  # noqa: E731
        where = self.meta.get("title") or "flip audit"
        lines = [f"{where}: {self.n} samples, M1 {self.old.num_outputs} outputs, M2 {self.new.num_outputs} outputs",
                 f"  accuracy  M1 {f('accuracy_old')}   M2 {f('accuracy_new')}   gain {f('accuracy_gain')}",
                 f"  NFR {f('nfr')}   PFR {f('pfr')}",
                 f"  BR {f('br')}   BTC {f('btc')}   BEC {f('bec')}"]
        if "nfr" + OLD_CLASSES_SUFFIX in m:
            s = OLD_CLASSES_SUFFIX
            lines.append(f"  old classes (0..{self.old_num_classes - 1}, {m['n' + s]} samples): "
                         f"NFR {f('nfr' + s)}   BR {f('br' + s)}")
        if CRITICAL_PREFIX + "nfr" in m:
            p = CRITICAL_PREFIX
            lines.append(f"  critical ({m[p + 'n']} samples): NFR {f(p + 'nfr')}   BR {f(p + 'br')}")
        cells = self.top_cells(top)
        names = self.class_names
        lines.append("  top negative flips (true -> M2): "
                     + (", ".join(f"{names[t]} -> {names[p]}: {c}" for t, p, c in cells) if cells else "none"))
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN as null): metrics as {value, count, denominator}."""
        def rate(count, den):
            return Rate(int(count), int(den)).to_json()

        per_class = [{"class": int(r["class"]), "name": r["name"], "n": int(r["n"]),
                      "n_old_right": int(r["n_old_right"]), "n_negative_flips": int(r["n_negative_flips"]),
                      "n_positive_flips": int(r["n_positive_flips"]), "n_critical": int(r["n_critical"]),
                      "nfr": rate(r["n_negative_flips"], r["n"]), "br": rate(r["n_negative_flips"], r["n_old_right"])}
                     for r in self.per_class.to_dict("records")]
        return {
            **{k: v for k, v in self.meta.items() if k != "title"},
            "n": self.n,
            "class_names": list(self.class_names),
            "old_outputs": self.old.num_outputs,
            "new_outputs": self.new.num_outputs,
            "old_num_classes": self.old_num_classes,
            "critical_classes": list(self.critical_classes),
            "metrics": {k: (v.to_json() if isinstance(v, Rate) else int(v)) for k, v in self.metrics.items()},
            "flip_matrix": {"rows": "true class", "columns": "class M2 predicts",
                            "counts": self.flip_matrix.astype(int).tolist()},
            "top_negative_flips": [{"true": t, "true_name": self.class_names[t], "predicted": p,
                                    "predicted_name": self.class_names[p], "count": c}
                                   for t, p, c in self.top_cells(10)],
            "per_class": per_class,
        }


def _as_numpy(a: Any) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def flip_audit(old_model: nn.Module, new_model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
               class_names: Sequence[str], critical_mask: Any = None,
               old_num_classes: int | None = None, batch_size: int = 1024) -> FlipAudit:
    """Audit the update `old_model` (M1) -> `new_model` (M2) on `(x, y)`.

    `x`: the split's inputs as the models take them (normalised NCHW); `y`: int labels.
    The models may have fewer outputs than there are classes (class-incremental: M1 knows
    the first `old_num_classes`, default its output count); then every metric is also
    given on the old classes (suffix `_old_classes`). `critical_mask`: bool per sample;
    adds the `critical_` metrics. A model's probability of a class it has no output for is 0.
    """
    names = tuple(str(c) for c in class_names)
    y_np = _as_numpy(y).astype(np.int64)
    if y_np.ndim != 1 or len(x) != y_np.size:
        raise ValueError(f"x and y must hold the same samples, got {len(x)} inputs and labels of shape {y_np.shape}")
    num_classes = len(names)
    if y_np.size and not (0 <= y_np.min() and y_np.max() < num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1} (one per class name), "
                         f"got {y_np.min()}..{y_np.max()}")
    y_t = torch.from_numpy(y_np)
    old, new = predict(old_model, x, y_t, batch_size), predict(new_model, x, y_t, batch_size)
    for what, p in (("old", old), ("new", new)):
        if p.num_outputs > num_classes:
            raise ValueError(f"the {what} model has {p.num_outputs} outputs but there are {num_classes} classes")
    crit = None
    if critical_mask is not None:
        crit = _as_numpy(critical_mask)
        if crit.dtype != np.bool_ or crit.shape != y_np.shape:
            raise ValueError(f"critical_mask must be a bool vector of length {y_np.size}, "
                             f"got {crit.dtype} {crit.shape}")
    n_old = int(old_num_classes if old_num_classes is not None else old.num_outputs)

    ok_old, ok_new = old.pred == y_np, new.pred == y_np
    metrics = dict(_rates(ok_old, ok_new))
    with_old = n_old < num_classes
    if with_old:
        m = y_np < n_old
        metrics.update({k + OLD_CLASSES_SUFFIX: v for k, v in _rates(ok_old[m], ok_new[m]).items()})
    if crit is not None:
        metrics.update({CRITICAL_PREFIX + k: v for k, v in _rates(ok_old[crit], ok_new[crit]).items()})
    metrics = {k: metrics[k] for k in metric_names(old_classes=with_old, critical=crit is not None)}

    neg = ok_old & ~ok_new
    pos = ~ok_old & ok_new
    flip_matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(flip_matrix, (y_np[neg], new.pred[neg]), 1)

    count = lambda mask: np.bincount(y_np[mask], minlength=num_classes)  # noqa: E731
    per_class = pd.DataFrame({
        "class": np.arange(num_classes), "name": list(names), "n": count(np.ones_like(ok_old)),
        "n_old_right": count(ok_old), "n_negative_flips": count(neg), "n_positive_flips": count(pos),
        "n_critical": count(crit) if crit is not None else np.zeros(num_classes, dtype=np.int64)})
    with np.errstate(divide="ignore", invalid="ignore"):
        per_class["nfr"] = np.where(per_class["n"] > 0, per_class["n_negative_flips"] / per_class["n"], np.nan)
        per_class["br"] = np.where(per_class["n_old_right"] > 0,
                                   per_class["n_negative_flips"] / per_class["n_old_right"], np.nan)

    idx = np.concatenate([np.flatnonzero(neg), np.flatnonzero(pos)])
    name_of = np.asarray(names, dtype=object)
    flips = pd.DataFrame({
        "sample_index": idx.astype(np.int64),
        "label": y_np[idx], "label_name": name_of[y_np[idx]],
        "old_pred": old.pred[idx], "old_pred_name": name_of[old.pred[idx]],
        "new_pred": new.pred[idx], "new_pred_name": name_of[new.pred[idx]],
        "old_p_pred": old.p_pred[idx], "new_p_pred": new.p_pred[idx],
        "old_p_true": old.p_true[idx], "new_p_true": new.p_true[idx],
        "kind": ["negative"] * int(neg.sum()) + ["positive"] * int(pos.sum()),
        "critical": crit[idx] if crit is not None else np.zeros(idx.size, dtype=bool),
    }, columns=list(FLIP_COLUMNS))
    return FlipAudit(names, y_np, old, new, crit, n_old, metrics, flip_matrix, per_class, flips)


__all__ = ["Rate", "Predictions", "FlipAudit", "flip_audit", "predict", "format_metric", "FLIP_COLUMNS"]
