"""Recording learning curves for the replay benchmark (`bench/replay.py record`).

Per scenario of a search space, N configurations are drawn with Optuna's RandomSampler through
`SearchSpace.suggest` (the sweep's own define-by-run sampling) and each is trained for the
full epoch budget with `run_trial` in this process (no Ray): after every update epoch the
validation objectives (`epoch_report`, the values a live trial reports to the scheduler; the
last epoch's from the trial's own final validation metrics), the cumulative seconds, and at
the end the test objectives. One table row per (configuration, epoch), long format:

    scenario, config, method, hparams (JSON), structure (method + categorical knobs),
    epoch, max_epoch, seconds (cumulative trial seconds at that epoch, without the one-off
    M1 / reference training a sweep caches), seconds_total, status, val_<objective>...,
    test_<objective>... (the final test values, repeated on each row of the configuration).

Configurations run in a random order and are appended to a JSON-lines journal as they
finish, so a recording can be stopped and continued; `write_table` turns the journal into
the Parquet table.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

STRUCTURAL_KINDS = ("choice",)  # categorical knobs shift where a learning curve starts


def structure(method: str, hparams: dict[str, Any], dists: dict[str, Any]) -> str:
    """The configuration's structural stratum: its method and its categorical choices."""
    cats = [f"{k}={hparams[k]}" for k, d in sorted(dists.items()) if d.kind in STRUCTURAL_KINDS and k in hparams]
    return ":".join([method, *cats])


def draw(space, key: str, n: int, seed: int) -> list[dict[str, Any]]:
    """N configurations of study `key`, drawn at random through the space's own sampling."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["minimize"], sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for i in range(n):
        trial = study.ask()
        method, hp, s = space.suggest(trial)
        out.append({"config": i, "method": method, "hparams": hp, "seed": s,
                    "structure": structure(method, hp, space.methods[method])})
    return out


def record_scenario(space, key: str, n: int, seed: int, journal: Path, log=print,
                    configs: range | None = None) -> None:
    """Train the drawn configurations of study `key` (those numbered in `configs`, default all)
    not yet in `journal`, appending each."""
    import torch

    from flipsearch.references import ReferenceStore
    from flipsearch.storage import Storage
    from flipsearch.trial import VAL_PREFIX, load_data, run_trial

    done = set()
    for other in journal.parent.glob(f"{key}*.jsonl"):  # this journal and its parallel or seeded peers
        done |= {json.loads(line)["config"] for line in other.read_text().splitlines() if line.strip()}
    todo = [c for c in draw(space, key, n, seed)
            if c["config"] not in done and (configs is None or c["config"] in configs)]
    if not todo:
        return
    names = [o.metric for o in space.objectives]
    store = ReferenceStore(Storage.open(str(journal.parent / f"refs-{journal.stem}")))
    dataset = load_data(space.config(key, todo[0]["method"], todo[0]["hparams"], todo[0]["seed"]))
    for c in todo:
        cfg = space.config(key, c["method"], c["hparams"], c["seed"]).replace(device="cpu")
        stamps: list[float] = []
        curve: list[dict[str, float]] = []
        t0 = time.perf_counter()

        def progress(stage, epoch, epochs, loss):
            if stage == "update":
                stamps.append(time.perf_counter() - t0)

        def report(epoch, val, seconds):
            curve.append({n_: float(val[n_]) for n_ in names})
            return False

        torch.manual_seed(0)
        res = run_trial(cfg, store=store, dataset=dataset, epoch_report=report, progress=progress)
        total = time.perf_counter() - t0
        if res.status == "ok":
            curve.append({n_: float(res.metrics[VAL_PREFIX + n_]) for n_ in names})
        one_off = sum(v for k, v in res.timings.items() if k in ("m1", "references"))
        entry = {**c, "scenario": key, "status": res.status, "max_epoch": cfg.update_recipe.epochs,
                 "seconds": [max(0.0, s - one_off) for s in stamps[:len(curve)]],
                 "seconds_total": max(0.0, total - one_off), "val": curve,
                 "test": {n_: float(res.metrics[n_]) for n_ in names} if res.status == "ok" else {}}
        with journal.open("a") as f:
            f.write(json.dumps(entry) + "\n")
        log(f"{key} config {c['config']} {c['structure']}: {res.status}, {len(curve)} epochs, "
            f"{entry['seconds_total']:.1f} s, load {os.getloadavg()[0]:.1f}")


def journal_from_table(table: Path, journal_dir: Path, objectives: list[str]) -> int:
    """Seed `journal_dir` with the configurations an earlier recording left in `table` (its
    journals gone with the machine), so `record` runs only the rest: one journal per scenario,
    `<key>.table.jsonl`, written once. Returns the number of configurations seeded."""
    import pandas as pd

    df = pd.read_parquet(table)
    n = 0
    for key, part in df.groupby("scenario"):
        path = journal_dir / f"{key}.table.jsonl"
        if path.exists():
            continue
        with path.open("w") as f:
            for config, rows in part.sort_values("epoch").groupby("config"):
                first = rows.iloc[0]
                f.write(json.dumps({
                    "config": int(config), "method": first["method"], "hparams": json.loads(first["hparams"]),
                    "structure": first["structure"], "scenario": key, "status": first["status"],
                    "max_epoch": int(first["max_epoch"]), "seconds": [float(x) for x in rows["seconds"]],
                    "seconds_total": float(first["seconds_total"]),
                    "val": [{m: float(r[f"val_{m}"]) for m in objectives} for _, r in rows.iterrows()],
                    "test": {m: float(first[f"test_{m}"]) for m in objectives}}) + "\n")
                n += 1
    return n


def write_table(journals: list[Path], path: Path, objectives: list[str]) -> int:
    """The Parquet table of the journals' entries (one row per configuration and epoch)."""
    import pandas as pd

    rows, seen = [], set()
    for j in journals:
        for line in j.read_text().splitlines():
            if not line.strip():
                continue
            e = json.loads(line)
            if (e["scenario"], e["config"]) in seen:  # a configuration two parallel journals both ran
                continue
            seen.add((e["scenario"], e["config"]))
            for ep, (val, sec) in enumerate(zip(e["val"], e["seconds"]), start=1):
                rows.append({"scenario": e["scenario"], "config": e["config"], "method": e["method"],
                             "hparams": json.dumps(e["hparams"], sort_keys=True), "structure": e["structure"],
                             "epoch": ep, "max_epoch": e["max_epoch"], "seconds": sec,
                             "seconds_total": e["seconds_total"], "status": e["status"],
                             **{f"val_{m}": val[m] for m in objectives},
                             **{f"test_{m}": e["test"].get(m, float("nan")) for m in objectives}})
    df = pd.DataFrame(rows).sort_values(["scenario", "config", "epoch"]).reset_index(drop=True)
    df.to_parquet(path, index=False)
    return df.groupby("scenario")["config"].nunique().sum()
