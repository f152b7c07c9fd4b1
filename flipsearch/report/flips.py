"""Flips you can see: the recommended update against plain retraining, sample by sample.

For each scenario the report compares two configurations — the recommendation and the `ce`
baseline (default hyperparameters, `init=old`) at the recommendation's seed, so both updates
start from the same M1 on the same split. A side whose trial kept its model
(`OUT/models/`, `search.keep`) is loaded from it, with no training; any other is re-run with
`flipsearch.trial.run_trial` and a `ReferenceStore` on `OUT/references` (M1 is a cache hit).
Each is audited against M1 on the test set with `flipsearch.audit.flip_audit`. Their
negative flips split three ways:

- `both`: samples M1 got right that the recommendation and ce both break;
- `only_rec`: broken by the recommendation only (what it breaks that ce does not);
- `only_ce`: broken by ce only (what the recommendation saves).

The page pieces are the audit's own (`flipsearch.audit.page`: the flip matrix table and the
gallery cards), so the report and `flipsearch compare` draw flips the same way. A re-run
whose NFR differs from the recorded row is flagged, never silently shown as the row's, with
why it cannot be exact when the row's numerics (torch, device, precision, threads; see
`flipsearch.numerics`) differ from the re-run's.
"""

from __future__ import annotations

import base64
import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

from .baselines import BASELINE_METHOD, is_default_ce
from .recommend import replay_device

GALLERY_LIMIT = 60


@dataclass
class FlipSide:
    """One re-run trial of a flip comparison (the recommendation or the ce baseline): its configuration, its
    flip audit and whether it reproduced its recorded row."""
    label: str                       # "recommendation" or "ce baseline"
    config: Any                      # TrialConfig
    audit: Any                       # flipsearch.audit.FlipAudit
    recorded_nfr: float | None       # the recorded row's NFR for this exact configuration and seed
    seconds: float
    not_exact: list[str] = field(default_factory=list)  # why this re-run cannot equal the row bitwise
    source: str = "re-run"           # "re-run", or "kept model <trial uid>" when loaded from OUT/models/

    @property
    def nfr(self) -> float:
        return float(self.audit.metrics["nfr"].value)

    @property
    def reproduced(self) -> bool | None:
        if self.recorded_nfr is None or math.isnan(self.recorded_nfr):
            return None
        return abs(self.nfr - self.recorded_nfr) < 1e-9

    @property
    def negatives(self) -> np.ndarray:
        return np.flatnonzero(self.audit.negative)


@dataclass
class FlipComparison:
    """A scenario's flip comparison: the recommendation and the ce baseline re-run and audited, with the
    thumbnails of their flipped samples (or why it could not run)."""
    scenario: str
    rec: FlipSide | None = None
    ce: FlipSide | None = None       # None when the recommendation is the ce baseline itself
    thumbs: dict[int, str] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0

    @property
    def both(self) -> np.ndarray:
        return np.intersect1d(self.rec.negatives, self.ce.negatives) if self.rec and self.ce else np.zeros(0, int)

    @property
    def only_rec(self) -> np.ndarray:
        return np.setdiff1d(self.rec.negatives, self.ce.negatives) if self.rec and self.ce else np.zeros(0, int)

    @property
    def only_ce(self) -> np.ndarray:
        return np.setdiff1d(self.ce.negatives, self.rec.negatives) if self.rec and self.ce else np.zeros(0, int)

    def to_json(self) -> dict:
        if self.error or self.rec is None:
            return {"error": self.error}

        def side(s: FlipSide | None):
            if s is None:
                return None
            return {"config": s.config.to_dict(), "seed": s.config.seed, "seconds": round(s.seconds, 3),
                    "source": s.source,
                    "recorded_nfr": s.recorded_nfr, "reproduced": s.reproduced, "not_exact": s.not_exact,
                    "metrics": {k: (v.to_json() if hasattr(v, "to_json") else int(v))
                                for k, v in s.audit.metrics.items()},
                    "flip_matrix": s.audit.flip_matrix.astype(int).tolist(),
                    "negative_flips": [int(i) for i in s.negatives]}

        return {"recommendation": side(self.rec), "baseline": side(self.ce),
                "same_configuration": self.ce is None,
                "both": [int(i) for i in self.both], "only_recommendation": [int(i) for i in self.only_rec],
                "only_baseline": [int(i) for i in self.only_ce], "seconds": round(self.seconds, 3)}


def _same_config_rows(rows: pd.DataFrame, cfg) -> pd.DataFrame:
    """The ok rows of `rows` that ran exactly this configuration and seed."""
    from ..results import decode_config

    ok = rows[(rows["status"] == "ok") & (rows["method"] == cfg.method) & (rows["seed"] == cfg.seed)]
    want = cfg.replace(device="auto")

    def same(r) -> bool:
        try:
            return decode_config(r).replace(device="auto") == want
        except Exception:  # noqa: BLE001 - a row that no longer decodes is not this configuration
            return False

    return ok[[same(r) for _, r in ok.iterrows()]] if len(ok) else ok


def _recorded_row(rows: pd.DataFrame, cfg) -> pd.Series | None:
    """The row of `rows` that recorded exactly this configuration and seed with a test NFR, if one did."""
    for _, r in _same_config_rows(rows, cfg).iterrows():
        if pd.notna(r.get("nfr")):
            return r
    return None


def _kept_uid(rows: pd.DataFrame, cfg, kept: set[str], prefer: str | None = None) -> str | None:
    """A trial of exactly this configuration and seed whose model was kept (`prefer` first)."""
    if prefer is not None and prefer in kept:
        return prefer
    uids = [str(u) for u in _same_config_rows(rows, cfg).get("trial_uid", pd.Series(dtype=str))]
    return next((u for u in uids if u in kept), None)


def _run(cfg, store, label: str, rows: pd.DataFrame, scenario, dataset, out=None,
         kept_uid: str | None = None) -> FlipSide:
    """One side of the comparison: the kept model `kept_uid` when given (no training), else a re-run."""
    from ..audit import flip_audit
    from ..errors import UsageError
    from ..trial import critical_test_mask, run_trial

    t0 = time.perf_counter()
    source = "re-run"
    m1 = m2 = result = None
    if kept_uid is not None:
        from ..kept_models import kept_networks

        try:
            net = kept_networks(out, kept_uid, cfg.replace(device="cpu"), scenario)
            dev = scenario.x_test.device
            m1, m2, source = net.m1.to(dev), net.m2.to(dev), f"kept model {kept_uid}"
        except UsageError as e:  # a changed or missing file: re-run it, and say so
            source = f"re-run (the kept model is unusable: {e})"
    if m2 is None:
        result = run_trial(cfg, store=store, dataset=dataset)
        if result.status != "ok":
            raise RuntimeError(f"re-running the {label} ended {result.status}: {result.error}")
        m1, m2 = result.old_model, result.model
    y = scenario.y_test
    mask = critical_test_mask(cfg, y)
    names = scenario.dataset.class_names or tuple(str(c) for c in range(scenario.num_classes))
    audit = flip_audit(m1, m2, scenario.x_test, y, class_names=names,
                       critical_mask=None if mask is None else mask.cpu().numpy().astype(bool),
                       old_num_classes=scenario.num_old_classes)
    from ..numerics import rerun_differences

    row = _recorded_row(rows, cfg)
    # a kept model is the trial's own weights; only a re-run can differ from its row
    not_exact = [] if row is None or result is None else rerun_differences(row, result.numerics)
    return FlipSide(label, cfg, audit, None if row is None else float(row["nfr"]), time.perf_counter() - t0,
                    not_exact, source)


def compare_flips(out_uri: str, key: str, point: pd.Series, rows: pd.DataFrame,
                  limit: int = GALLERY_LIMIT, threads: int = 1) -> FlipComparison:
    """Re-run the recommendation `point` (a row of the scenario) and the ce baseline at its
    seed, audit both against their M1 on the test set. `threads`: torch's intra-op threads
    for the re-runs when the row does not record its own (float sums depend on the thread
    count, so another count can change a result). Any failure is kept as `error`
    (the report then says why the section is missing) rather than raised."""
    import torch

    from ..audit import pixel_range, thumbnail_png, to_pixels
    from ..kept_models import kept_uids
    from ..references import ReferenceStore
    from ..results import decode_config
    from ..baseline import config as baseline_config
    from ..config import TrialConfig
    from ..rundir import RunDir, SweepRecord
    from ..trial import load_data, load_scenario

    t0 = time.perf_counter()
    cmp = FlipComparison(key)
    before = torch.get_num_threads()
    try:
        from ..numerics import threads_of

        torch.set_num_threads(max(1, threads_of(point) or int(threads)))
        cfg = decode_config(point)
        cfg = cfg.replace(device=replay_device(cfg.device))  # the row's own device, never `auto`
        run = RunDir(out_uri)
        out = run.storage
        store = ReferenceStore(run.sub(RunDir.REFERENCES))
        kept = kept_uids(out)
        dataset = None if cfg.explicit else load_data(cfg)          # once for both re-runs
        scenario = load_scenario(cfg, dataset)
        rec_is_ce = cfg.method == BASELINE_METHOD and is_default_ce(point)
        cmp.rec = _run(cfg, store, "ce baseline" if rec_is_ce else "recommendation", rows, scenario, dataset, out,
                       _kept_uid(rows, cfg, kept, str(point.get("trial_uid"))))
        if not rec_is_ce:
            # the scenario's baseline: ce at its defaults on the scenario's update recipe, which a
            # searched recipe (the recommendation's update.lr) must not replace
            template = (run.read_record() or SweepRecord()).templates.get(key)
            ce_cfg = (baseline_config(TrialConfig.from_dict(template)).replace(seed=cfg.seed, device=cfg.device)
                      if template else cfg.replace(method=BASELINE_METHOD, hparams={}))
            cmp.ce = _run(ce_cfg, store, "ce baseline", rows, scenario, dataset, out, _kept_uid(rows, ce_cfg, kept))
        parts = ([(cmp.rec.audit, cmp.both), (cmp.rec.audit, cmp.only_rec), (cmp.ce.audit, cmp.only_ce)]
                 if cmp.ce else [(cmp.rec.audit, cmp.rec.negatives)])
        shown = [i for audit, part in parts for i in _gallery_order(audit, part)[:limit]]
        if shown:
            idx = sorted(set(shown))
            px = to_pixels(scenario.x_test[idx].cpu(), pixel_range(scenario.dataset.x_train.cpu()))
            cmp.thumbs = {i: "data:image/png;base64," + base64.b64encode(thumbnail_png(p)).decode("ascii")
                          for i, p in zip(idx, px)}
    except Exception as e:  # noqa: BLE001 - the section reports it; the rest of the report stands
        cmp.error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'failed'}"
    finally:
        torch.set_num_threads(before)
    cmp.seconds = time.perf_counter() - t0
    return cmp


def _gallery_order(audit, samples: np.ndarray) -> list[int]:
    """`samples` (negative flips of `audit`) in the audit gallery's order: M2's most confident mistakes first."""
    f = audit.flips[(audit.flips["kind"] == "negative") & audit.flips["sample_index"].isin(samples)]
    f = f.sort_values(["new_p_pred", "sample_index"], ascending=[False, True], kind="stable")
    return [int(i) for i in f["sample_index"]]


# ------------------------------------------------------------------------------- HTML


def _subset(audit, samples: np.ndarray):
    """`audit` with its flip rows cut to the negative flips in `samples` (for the audit's cards)."""
    f = audit.flips
    keep = (f["kind"] == "negative") & f["sample_index"].isin(samples)
    return dataclasses.replace(audit, flips=f[keep])


def flips_html(cmp: FlipComparison, escape: Callable[[str], str], limit: int = GALLERY_LIMIT) -> str:
    """The scenario's flip section: both flip matrices side by side, then the three
    galleries (both break / only the recommendation / only ce)."""
    from ..audit.core import format_metric
    from ..audit.page import flip_cards, flip_matrix_html

    if cmp.error or cmp.rec is None:
        return f"<p class=\"note\">No flip comparison: {escape(cmp.error or 'nothing to compare')}.</p>"

    def head(s: FlipSide) -> str:
        m = s.audit.metrics
        if s.reproduced is None:
            repro = "no recorded row of it at this seed"
        elif s.reproduced:
            repro = "reproduces the recorded row"
        else:
            repro = f"differs from the recorded row (recorded NFR {s.recorded_nfr * 100:.2f} %" + (
                f"; cannot be exact: {'; '.join(s.not_exact)})" if s.not_exact else ")")
        how = (f"loaded from its {s.source} (no re-run) in {s.seconds:.1f} s" if s.source.startswith("kept model")
               else f"{s.source} in {s.seconds:.1f} s")
        return (f"<p><b>{escape(s.label)}</b>: <code>{escape(s.config.method)}</code> "
                f"{escape(_hp_text(s.config.hparams))}, seed {s.config.seed} — NFR "
                f"{escape(format_metric('nfr', m['nfr']))}, BR {escape(format_metric('br', m['br']))}, "
                f"acc M2 {escape(format_metric('accuracy_new', m['accuracy_new']))}; "
                f"{escape(how)}, {escape(repro)}.</p>")

    sides = [cmp.rec] + ([cmp.ce] if cmp.ce else [])
    cols = "".join(f"<div class=\"flipcol\">{head(s)}<h4>true class × its M2's prediction</h4>"
                   f"{flip_matrix_html(s.audit)}</div>" for s in sides)
    out = [f"<div class=\"flipcols\">{cols}</div>"]
    if cmp.ce is None:
        html, n = flip_cards(_subset(cmp.rec.audit, cmp.rec.negatives), "negative", cmp.thumbs, limit)
        out.append("<p class=\"note\">The recommendation is the ce baseline itself: there is nothing to tell apart."
                   f"</p><h4>Its negative flips ({n})</h4>{html}")
        return "\n".join(out)
    parts = [("both", "broken by both", cmp.both, cmp.rec.audit,
              "M1 right, the recommendation and ce both wrong (M2 = the recommendation)"),
             ("only-rec", "broken only by the recommendation", cmp.only_rec, cmp.rec.audit,
              "what this update breaks that plain retraining keeps (M2 = the recommendation)"),
             ("only-ce", "broken only by ce — saved", cmp.only_ce, cmp.ce.audit,
              "what plain retraining breaks and this update keeps (M2 = ce)")]
    gal = []
    for slug, title, samples, audit, note in parts:
        html, n = flip_cards(_subset(audit, samples), "negative", cmp.thumbs, limit)
        gal.append(f"<div class=\"flipset\" id=\"flips-{escape(cmp.scenario)}-{slug}\"><h4>{escape(title)} ({n})</h4>"
                   f"<p class=\"note\">{escape(note)}</p>{html}</div>")
    out.append(f"<div class=\"flipsets\">{''.join(gal)}</div>")
    return "\n".join(out)


def _hp_text(hp) -> str:
    from ._format import fmt_hparams

    return fmt_hparams(dict(hp))
