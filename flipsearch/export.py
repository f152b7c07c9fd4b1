"""From a sweep to a shipped update: a kept model with its M1 and its model card.

`load_update(out, trial)` (or `recommended=SCENARIO`) reads the kept M2 of one trial
(`kept_models.read_model`, checksum verified), its M1 from `OUT/references/` (checksum
verified too; a user's M1 from the path the trial was given), rebuilds both networks on the
CPU and writes the card: the configuration, the command that reruns it, validation and test
metrics with their counts, the seed spread where replicates ran, the sha256 of both weight
files and of every data split, and the versions, device and threads the trial ran with.
Before anything is returned, the kept weights are evaluated on the test split again and the
card says whether they reproduce the row's test metrics exactly.

`export_update(out, to, …)` writes `m2.pt`, `m1.pt` (plain CPU `state_dict`s:
`flipsearch compare --old m1.pt --new m2.pt` reads them), `card.json` and `card.md`. Every
check happens first: on bad input nothing is written.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from .errors import UsageError
from .storage import Storage

CARD_FILES = ("m2.pt", "m1.pt", "card.json", "card.md")
MIN_PREFIX = 6  # characters of a trial uid that may name it


@dataclass
class KeptUpdate:
    """One trial's update: M1 and M2 (CPU, eval mode), its card (a JSON-ready dict) and
    the weight files' bytes as exported."""

    trial_uid: str
    m1: Any
    m2: Any
    card: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict, repr=False)

    def write(self, to: str) -> list[str]:
        """Write `m2.pt`, `m1.pt`, `card.json` and `card.md` into the directory `to`."""
        check_target(to)
        os.makedirs(to, exist_ok=True)
        out = Storage.open(to)
        blobs = {**self.files, "card.json": json.dumps(self.card, indent=2, allow_nan=False).encode(),
                 "card.md": card_markdown(self.card).encode()}
        for name in CARD_FILES:
            out.write_bytes(blobs[name], name)
        return [os.path.join(to, n) for n in CARD_FILES]


def check_target(to: str) -> None:
    """An export directory must be a directory (or not exist yet) on a local path."""
    if "://" in to:
        raise UsageError(f"--to {to!r}: export writes to a local directory")
    if os.path.exists(to) and not os.path.isdir(to):
        raise UsageError(f"--to {to!r} is an existing file; give a directory")


# ------------------------------------------------------------------------ which trial


def find_trial(rows: pd.DataFrame, trial: str, uri: str) -> pd.Series:
    """The row of `trial` (a trial uid, or a unique prefix of at least MIN_PREFIX characters)."""
    uids = rows["trial_uid"].astype(str) if "trial_uid" in rows else pd.Series([], dtype=str)
    hit = rows[uids == trial]
    if not len(hit) and len(trial) >= MIN_PREFIX:
        hit = rows[uids.str.startswith(trial)]
    if len(hit) > 1:
        raise UsageError(f"trial {trial!r} matches {len(hit)} trials of {uri}; give more of its uid")
    if not len(hit):
        raise UsageError(f"no trial {trial!r} in {uri} (trial uids are the trial_uid column of its rows: "
                         "trials.csv or front.parquet of its report)")
    row = hit.iloc[0]
    if row.get("status") != "ok":
        raise UsageError(f"trial {row['trial_uid']} finished {row.get('status')}; it has no model to export")
    return row


def recommended_trial(out: str, scenario: str | None) -> tuple[str, dict[str, Any]]:
    """(trial uid, what the report says of it) of the report's recommendation in `scenario`
    (may be omitted when the sweep has one scenario)."""
    from .report.build import build_report

    rep = build_report(out, flips=False)
    keys = [s.key for s in rep.scenarios]
    if scenario in (None, ""):
        if len(keys) != 1:
            raise UsageError(f"the sweep has {len(keys)} scenarios ({', '.join(keys)}); name one: "
                             "--recommended SCENARIO")
        scenario = keys[0]
    if scenario not in keys:
        raise UsageError(f"unknown scenario {scenario!r}; the sweep's scenarios: {', '.join(keys)}")
    rec = next(s.recommendation for s in rep.scenarios if s.key == scenario)
    if rec.point is None:
        raise UsageError(f"scenario {scenario} has no recommendation ({'; '.join(rec.notes) or 'no ok trial'})")
    about = {"scenario": scenario, "rule": rec.rule, "feasible": bool(rec.feasible),
             "binding_constraints": [str(c) for c in rec.binding], "notes": list(rec.notes)}
    return str(rec.point["trial_uid"]), about


# ------------------------------------------------------------------------ loading


def _state_bytes(state: dict) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in state.items()}, buf)
    return buf.getvalue()


def _split_hashes(scenario) -> dict[str, dict[str, Any]]:
    """sha256 over each split's inputs and labels (float32 / int64 bytes as loaded)."""
    out = {}
    for name in ("train", "update", "val", "test"):
        x, y = scenario.split(name)
        h = hashlib.sha256()
        h.update(x.detach().cpu().contiguous().numpy().tobytes())
        h.update(y.detach().cpu().contiguous().numpy().tobytes())
        out[name] = {"sha256": h.hexdigest(), "samples": int(len(y))}
    return out


def _metrics(row: pd.Series, prefix: str) -> dict[str, float]:
    from .metrics import is_known_metric

    out = {}
    for col, v in row.items():
        name = str(col)[len(prefix):] if prefix else str(col)
        if (not prefix or str(col).startswith(prefix)) and is_known_metric(name) and not str(name).startswith("val_"):
            if v is not None and not pd.isna(v):
                out[name] = float(v)
    return out


def _recheck(cfg, scenario, m1, m2, recorded: dict[str, float]) -> dict[str, Any]:
    """The kept weights' test metrics against the row's: equal bit for bit, or the largest gap."""
    from .metrics import compute_metrics
    from .train import predict_logits
    from .trial import critical_test_mask

    x, y = scenario.x_test, scenario.y_test
    n_old, n_all = scenario.num_old_classes, scenario.num_classes
    got = compute_metrics(y, predict_logits(m1, x).argmax(1), predict_logits(m2, x).argmax(1),
                          old_class_mask=y < n_old if n_old < n_all else None,
                          critical_mask=critical_test_mask(cfg, y))
    gaps = [abs(float(got[k]) - v) for k, v in recorded.items() if k in got and math.isfinite(float(got[k]))]
    worst = max(gaps, default=0.0)
    return {"test_metrics_reproduced": worst == 0.0, "max_abs_difference": worst,
            "nfr": float(got["nfr"]), "recorded_nfr": recorded.get("nfr")}


def load_update(out: str, trial: str | None = None, *, recommended: str | bool | None = None) -> KeptUpdate:
    """The kept update of `trial` (a trial uid or a unique prefix), or with `recommended`
    the report's recommendation (`True`: the only scenario; a string: that scenario): M1,
    M2 and the model card. A missing or corrupt checkpoint, a trial that kept no model, an
    unknown trial or scenario: a one-line `UsageError`."""
    from .kept_models import environment, kept_networks, require_model
    from .report.recommend import trial_command
    from .results import decode_config, read_results
    from .trial import load_scenario

    if (trial is None) == (recommended in (None, False)):
        raise UsageError("name one trial: --trial UID or --recommended [SCENARIO]")
    storage = Storage.open(out)
    rows = read_results(storage)
    about = None
    if trial is None:
        trial, about = recommended_trial(out, None if recommended is True else str(recommended))
    row = find_trial(rows, str(trial), storage.uri)
    uid = str(row["trial_uid"])
    cfg = decode_config(row).replace(device="cpu")
    require_model(storage, uid)  # a trial without a model is refused before the data loads
    scenario = load_scenario(cfg)
    net = kept_networks(storage, uid, cfg, scenario)
    m1, m2 = net.m1, net.m2
    files = {"m2.pt": _state_bytes(net.m2_state), "m1.pt": _state_bytes(net.m1_state)}
    test = _metrics(row, "")
    card = {
        "trial_uid": uid, "study": str(row.get("study")), "trial_number": _int(row.get("trial_number")),
        "run_id": str(row.get("run_id")), "sweep": public_uri(storage.uri),
        "config": json.loads(json.dumps(cfg.replace(device=str(row.get("device") or "auto")).to_dict(), default=str)),
        "reproduce": trial_command(row)[0],
        "reproduce_exact_here": _rerun_here(row),
        "metrics": {"validation": _metrics(row, "val_"), "test": test},
        "replicates": _replicates(rows, row),
        "weights": {name: hashlib.sha256(b).hexdigest() for name, b in files.items()},
        "kept_model": {"path": f"models/{uid}.pt", "sha256": net.sha256, "m1": net.m1_source},
        "data": _split_hashes(scenario),
        "trained_with": {**net.environment, "hostname": str(row.get("hostname") or "")},
        "exported_with": environment(),
        "check": _recheck(cfg, scenario, m1, m2, test),
    }
    if about is not None:
        card["recommendation"] = about
    return KeptUpdate(uid, m1, m2, card, files)


def export_update(out: str, to: str, trial: str | None = None, *, recommended: str | bool | None = None) -> list[str]:
    """`load_update` and write its files into the directory `to`; returns their paths."""
    check_target(to)
    return load_update(out, trial, recommended=recommended).write(to)


def _rerun_here(row: pd.Series) -> list[str]:
    """Why the row's reproduce command, run in this environment, cannot give its weights
    bitwise (empty: it can). The command carries the row's thread count."""
    import torch

    from .numerics import numerics, rerun_differences, threads_of

    device = str(row.get("device_used") or "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        device = "cpu"
    recorded = str(row.get("precision") or "float32")
    here = numerics(device, m1_amp=recorded in ("amp", "amp-m1"), update_amp=recorded in ("amp", "amp-update"))
    if threads_of(row) is not None:
        here["threads"] = threads_of(row)
    return rerun_differences(row, here)


def public_uri(uri: str) -> str:
    """`uri` without credentials (`s3://key:secret@bucket/…`) or options (`?endpoint_override=…`)."""
    if "://" not in uri:
        return uri
    scheme, rest = uri.split("://", 1)
    rest = rest.split("?", 1)[0]
    head, sep, tail = rest.partition("/")
    return f"{scheme}://{head.rsplit('@', 1)[-1]}{sep}{tail}"


def _int(v) -> int | None:
    return None if v is None or pd.isna(v) else int(v)


def _replicates(rows: pd.DataFrame, row: pd.Series) -> dict[str, Any] | None:
    """Mean, std and 95 % interval of the test metrics over the trial and its replicates
    (None when no replicate ran)."""
    from .report.build import REPORTED
    from .report.selection import runs_with_replicates
    from .report.stats import stats_of

    idx = rows.index[rows["trial_uid"].astype(str) == str(row["trial_uid"])]
    runs = rows.loc[runs_with_replicates(rows[rows["study"] == row.get("study")], idx)]
    if len(runs) < 2:
        return None
    metrics = [m for m in REPORTED if m in runs.columns]
    return {"runs": int(len(runs)), "seeds": [int(s) for s in runs["seed"]],
            "test": {m: s.to_json() for m, s in stats_of(runs, metrics).items()}}


# ------------------------------------------------------------------------ card.md


def card_markdown(card: dict[str, Any]) -> str:
    """The card as Markdown for a reader."""
    from .metrics import RATE_COUNTS

    cfg = card["config"]
    lines = [f"# Model card: {cfg['method']} update on {cfg['dataset']} / {cfg['arrangement']}", "",
             f"Trial `{card['trial_uid']}` (#{card['trial_number']} of study `{card['study']}`, "
             f"run {card['run_id']}) of the sweep `{card['sweep']}`.", ""]
    if card.get("recommendation"):
        r = card["recommendation"]
        lines += [f"The report's recommendation for `{r['scenario']}`: {r['rule']}"
                  + ("" if r["feasible"] else " (no configuration is feasible: this is the closest)") + ".", ""]
    lines += ["## Configuration", "", "```", card["reproduce"], "```", ""]
    why = card.get("reproduce_exact_here") or []
    lines += [("Run here, this command cannot give bitwise the same weights: " + "; ".join(why) + ".")
              if why else "Run on the same machine kind, it gives bitwise the same M1 and M2 (docs/METHODS.md §6).", ""]
    lines += [f"- model `{cfg['model']}`, seed {cfg['seed']}, hyperparameters "
              + (", ".join(f"{k}={v}" for k, v in cfg["hparams"].items()) or "defaults"), ""]
    val, test = card["metrics"]["validation"], card["metrics"]["test"]
    lines += ["## Metrics", "", "| metric | validation | test | test counts |", "|---|---|---|---|"]
    for m in ("accuracy_old", "accuracy_new", "accuracy_gain", "nfr", "pfr", "br", "btc", "bec"):
        if m not in test and m not in val:
            continue
        num, den = RATE_COUNTS.get(m, (None, None))
        counts = f"{int(test[num])} / {int(test[den])}" if num in test and den in test else ""
        lines.append(f"| {m} | {_pct(val.get(m))} | {_pct(test.get(m))} | {counts} |")
    lines.append("")
    reps = card.get("replicates")
    if reps:
        lines += [f"Over {reps['runs']} runs (seeds {', '.join(map(str, reps['seeds']))}), test, mean and 95 % "
                  "interval:", ""]
        for m, s in reps["test"].items():
            lo, hi = s["ci95"]
            lines.append(f"- {m}: {_pct(s['mean'])} [{_pct(lo)}, {_pct(hi)}]")
        lines.append("")
    check = card["check"]
    lines += ["## Checks", "",
              "- the kept weights, evaluated again on the test split, "
              + ("reproduce the row's test metrics exactly" if check["test_metrics_reproduced"]
                 else f"differ from the row's test metrics by up to {check['max_abs_difference']:.3g}"), ""]
    lines += ["| file | sha256 |", "|---|---|"]
    lines += [f"| {name} | `{sha}` |" for name, sha in card["weights"].items()]
    lines += [f"| data: {name} ({d['samples']} samples) | `{d['sha256']}` |" for name, d in card["data"].items()]
    lines.append("")
    env = card["trained_with"]
    lines += ["## Environment", "",
              f"- trained with torch {env.get('torch')}, flipsearch {env.get('flipsearch')}, Ray {env.get('ray')}, "
              f"Optuna {env.get('optuna')} on {env.get('device')} with {env.get('threads')} thread(s)"
              + (f" ({env['hostname']})" if env.get("hostname") else ""),
              f"- exported with torch {card['exported_with'].get('torch')}, "
              f"flipsearch {card['exported_with'].get('flipsearch')}", ""]
    return "\n".join(lines)


def _pct(v) -> str:
    return "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{100 * float(v):.2f} %"
