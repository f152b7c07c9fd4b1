"""Kept models (`search.keep`), `flipsearch export` and `load_update`, on real tiny sweeps (digits)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from flipsearch.cli import cli
from flipsearch.errors import UsageError
from flipsearch.kept_models import MODELS_DIR, Keeper, kept_uids, wanted
from flipsearch.objectives import Constraint, Objective
from flipsearch.storage import Storage

OBJECTIVES = (("accuracy_new", "max"), ("nfr", "min"))

FRONT_SPACE = """
name: t-keep
scenario:
  datasets: [digits]
  arrangements: [exclusive-op]
  models: [small]
  training: {epochs: 1}
objectives: [accuracy_new:max, nfr:min]
search: {sampler: random, trials_per_scenario: 8, seed: 5, concurrency: 1, pack: 2, replicates: 1}
methods:
  ce: {init: {choice: [old, scratch]}}
  bct:
    lambda_c: {loguniform: [0.05, 4.0]}
    variant: {choice: [new-error, strict-imitation]}
"""

def independent_front(rows: pd.DataFrame, objectives=OBJECTIVES, constraints=()) -> set[str]:
    """The validation front of each study's ok search trials, by a plain pairwise loop."""
    search = rows[(rows["status"] == "ok") & rows["replicate_of"].isna()]
    out = set()
    for _, study in search.groupby("study"):
        points = []
        for _, r in study.iterrows():
            if all(c(r) for c in constraints):
                points.append((r["trial_uid"], [(-1 if d == "max" else 1) * float(r["val_" + m])
                                                for m, d in objectives]))
        for uid, p in points:
            dominated = any(all(a <= b for a, b in zip(q, p)) and any(a < b for a, b in zip(q, p)) for _, q in points)
            if not dominated:
                out.add(uid)
    return out


def with_replicates(rows: pd.DataFrame, front: set[str]) -> set[str]:
    reps = rows[rows["replicate_of"].isin(front) & (rows["status"] == "ok")]
    return front | set(reps["trial_uid"])


def models_on_disk(out) -> list[str]:
    return sorted(os.listdir(os.path.join(out, MODELS_DIR))) if os.path.isdir(os.path.join(out, MODELS_DIR)) else []


# ------------------------------------------------------------------ the keep rule, no training


def _row(uid, acc, nfr, status="ok", replicate_of=None, method="bct", study="s"):
    return {"trial_uid": uid, "study": study, "status": status, "replicate_of": replicate_of, "method": method,
            "val_accuracy_new": acc, "val_nfr": nfr}


def test_front_rule_counts_only_feasible_dominators_and_keeps_replicates():
    objs = [Objective("accuracy_new", "max"), Objective("nfr", "min")]
    cons = [Constraint("nfr", "<=", 0.05)]
    rows = pd.DataFrame([
        _row("a", 0.90, 0.02),            # front
        _row("b", 0.80, 0.03),            # dominated by a
        _row("c", 0.95, 0.10),            # dominates a on accuracy but infeasible: rules nothing out
        _row("d", 0.85, 0.01),            # front (lowest nfr)
        _row("e", 0.99, 0.00, status="failed"),
        _row("a-r0", 0.50, 0.20, replicate_of="a"),   # a replicate of a front point
        _row("b-r0", 0.91, 0.00, replicate_of="b"),   # of a dominated one (and never on a front itself)
        _row("x", 0.10, 0.04, study="t"),             # another study's only trial: its front
        _row("x-bl", 0.2, 0.01, study="t", replicate_of="baseline:t", method="ce"),  # t's front is no ce: dropped
        _row("ce", 0.50, 0.01, study="u", method="ce"),  # the ce baseline's configuration, on u's front
        _row("u-bl", 0.4, 0.02, study="u", replicate_of="baseline:u", method="ce"),  # so its replicates stay
    ])
    assert wanted(rows, "front", objs, cons) == {"a", "d", "a-r0", "x", "ce", "u-bl"}
    assert wanted(rows, "front", objs, []) == {"a", "c", "d", "a-r0", "x", "ce", "u-bl"}  # c counts without it
    assert wanted(rows, "all", objs, cons) == {"a", "b", "c", "d", "a-r0", "b-r0", "x", "x-bl", "ce", "u-bl"}
    assert wanted(rows, "none", objs, cons) == set()


def test_with_nothing_feasible_the_closest_candidates_keep_their_models():
    from flipsearch.report.pareto import closest_to_feasible

    objs = [Objective("accuracy_new", "max"), Objective("nfr", "min")]
    rows = pd.DataFrame([_row("p", 0.90, 0.05), _row("q", 0.80, 0.03), _row("r", 0.75, 0.04)])
    one = [Constraint("nfr", "<=", 0.01)]
    assert wanted(rows, "front", objs, one) == {"q"}
    two = [Constraint("accuracy_new", ">=", 0.95), Constraint("nfr", "<=", 0.01)]
    keep = wanted(rows, "front", objs, two)
    assert keep == {"p", "q"}  # r is worse than q on both violations
    plain = rows.rename(columns={"val_accuracy_new": "accuracy_new", "val_nfr": "nfr"})
    assert closest_to_feasible(plain, two)["trial_uid"] in keep  # what the report would recommend


def test_keeper_spares_models_in_flight_and_prune_drops_what_has_no_row(tmp_path):
    out = Storage.open(str(tmp_path))
    store = out.sub(MODELS_DIR)
    for uid in ("a", "b", "flying"):
        store.write_bytes(b"w", f"{uid}.pt")
        store.write_bytes(b"x", f"{uid}.sha256")
    store.write_bytes(b"w", "half.pt")  # its checksum never landed
    written = []
    keeper = Keeper(out, "front", [Objective("accuracy_new", "max"), Objective("nfr", "min")], [],
                    pd.DataFrame([_row("a", 0.9, 0.01)]), written.append)
    keeper.write(_row("b", 0.8, 0.02))  # dominated by a: deleted at once
    assert [r["trial_uid"] for r in written] == ["b"]
    assert kept_uids(out) == {"a", "flying"}  # "flying" has no row yet: its trial is in flight
    keeper.prune()  # the sweep's end: nothing in flight any more
    assert sorted(store.list()) == ["a.pt", "a.sha256"]


def test_a_bad_keep_value_is_one_line_before_anything_runs(tiny_space, tmp_path):
    from flipsearch.search.space import load_space

    path = tiny_space(FRONT_SPACE.replace("replicates: 1}", "replicates: 1, keep: best}"))
    with pytest.raises(UsageError, match=r"search.keep='best'; choose from front, all, none"):
        load_space(path)
    result = CliRunner().invoke(cli, ["sweep", tiny_space(FRONT_SPACE), "--out", str(tmp_path / "o"), "--keep", "x"])
    assert result.exit_code == 2 and "--keep" in result.output and not (tmp_path / "o").exists()


# ------------------------------------------------------------------ a real sweep with --keep front


@pytest.fixture(scope="module")
def front_sweep(ray_local, tmp_path_factory):
    from flipsearch import sweep

    base = tmp_path_factory.mktemp("keep")
    path = base / "space.yaml"
    path.write_text(FRONT_SPACE)
    out = str(base / "out")
    summary = sweep(str(path), out=out, quiet=True)
    assert not summary.interrupted
    return out, summary


@pytest.mark.ray
@pytest.mark.slow
def test_keep_front_leaves_exactly_the_validation_front_and_its_replicates(front_sweep):
    from flipsearch.results import read_results

    out, summary = front_sweep
    rows = read_results(out)
    assert (rows["pack_size"] == 2).any()  # packed members are judged like solo trials
    front = independent_front(rows)
    assert front and len(front) < (rows["replicate_of"].isna()).sum()  # something was pruned
    want = with_replicates(rows, front)
    assert rows["replicate_of"].isin(front).any()  # the front's replicates ran and kept their models
    assert models_on_disk(out) == sorted([f"{u}.pt" for u in want] + [f"{u}.sha256" for u in want])
    assert summary.models_kept == len(want) and "models kept in models/" in summary.line()
    for uid in want:  # each file matches its published checksum
        data = open(os.path.join(out, MODELS_DIR, f"{uid}.pt"), "rb").read()
        assert hashlib.sha256(data).hexdigest() == open(os.path.join(out, MODELS_DIR, f"{uid}.sha256")).read()


@pytest.mark.ray
@pytest.mark.slow
def test_kept_models_reproduce_their_rows_test_metrics_exactly(front_sweep):
    from flipsearch.kept_models import kept_networks
    from flipsearch.metrics import compute_metrics
    from flipsearch.results import decode_config, read_results
    from flipsearch.train import predict_logits
    from flipsearch.trial import load_scenario

    out, _ = front_sweep
    rows = read_results(out).set_index("trial_uid")
    kept = kept_uids(out)
    assert kept
    for uid in sorted(kept):
        row = rows.loc[uid]
        cfg = decode_config(row).replace(device="cpu")
        scenario = load_scenario(cfg)
        net = kept_networks(Storage.open(out), uid, cfg, scenario)
        got = compute_metrics(scenario.y_test, predict_logits(net.m1, scenario.x_test).argmax(1),
                              predict_logits(net.m2, scenario.x_test).argmax(1))
        for name, value in got.items():
            if np.isfinite(value):
                assert value == row[name], (uid, name)  # bit for bit, not approximately
        assert all(v.device.type == "cpu" for v in net.m2_state.values())


@pytest.mark.ray
@pytest.mark.slow
def test_export_and_load_update_round_trip(front_sweep, tmp_path):
    from flipsearch import load_update
    from flipsearch.report.build import build_report

    out, _ = front_sweep
    to = tmp_path / "ship"
    result = CliRunner().invoke(cli, ["export", out, "--recommended", "--to", str(to)])
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(to)) == ["card.json", "card.md", "m1.pt", "m2.pt"]
    card = json.loads((to / "card.json").read_text())
    rec = build_report(out, flips=False).scenarios[0].recommendation
    assert card["trial_uid"] == rec.point["trial_uid"] and card["recommendation"]["feasible"] is True
    assert card["check"]["test_metrics_reproduced"] is True
    for name in ("m1.pt", "m2.pt"):
        assert hashlib.sha256((to / name).read_bytes()).hexdigest() == card["weights"][name]
    assert card["reproduce"].startswith("flipsearch trial --dataset digits")
    # same machine, versions and device, and the command carries the threads: only a pack can stand in the way
    assert all("pack of" in why for why in card["reproduce_exact_here"])
    assert {"accuracy_new", "nfr", "n_negative_flips", "n"} <= set(card["metrics"]["test"])
    assert {"accuracy_new", "nfr", "n"} <= set(card["metrics"]["validation"])
    assert card["replicates"]["runs"] >= 2 and "ci95" in card["replicates"]["test"]["nfr"]  # --replicates 1 ran
    assert set(card["data"]) == {"train", "update", "val", "test"}
    assert {"torch", "flipsearch", "ray", "optuna", "device", "threads"} <= set(card["trained_with"])
    assert "| nfr |" in (to / "card.md").read_text()

    assert load_update(out, recommended=True).card == card  # the API returns what the CLI wrote
    update = load_update(out, card["trial_uid"][:8])  # a unique prefix names the trial
    assert update.card == {k: v for k, v in card.items() if k != "recommendation"}
    m2 = torch.load(to / "m2.pt", weights_only=True)
    assert all(torch.equal(m2[k], v) for k, v in update.m2.state_dict().items())
    m1 = torch.load(to / "m1.pt", weights_only=True)
    assert all(torch.equal(m1[k], v) for k, v in update.m1.state_dict().items())
    # the exported pair is an ordinary pair of checkpoints for `flipsearch compare`
    cmp = CliRunner().invoke(cli, ["compare", "--old", str(to / "m1.pt"), "--new", str(to / "m2.pt"),
                                   "--dataset", "digits", "--model", "small", "--out", str(tmp_path / "cmp"), "--json"])
    assert cmp.exit_code == 0, cmp.output
    assert json.loads(cmp.output)["metrics"]["nfr"]["value"] == card["metrics"]["test"]["nfr"]


@pytest.mark.ray
@pytest.mark.slow
def test_export_refuses_bad_input_with_one_line_and_writes_nothing(front_sweep, tmp_path, capsys):
    from flipsearch.cli import main
    from flipsearch.results import read_results

    src, _ = front_sweep
    out = tmp_path / "copy"
    shutil.copytree(src, out, ignore=shutil.ignore_patterns("ray"))
    rows = read_results(str(out))
    kept = sorted(kept_uids(str(out)))
    dropped = sorted(set(rows.loc[rows["status"] == "ok", "trial_uid"]) - set(kept))
    assert len(kept) >= 2 and dropped
    models = out / MODELS_DIR
    corrupt, foreign = kept[0], kept[1]
    data = bytearray((models / f"{corrupt}.pt").read_bytes())
    data[-20] ^= 0xFF  # one flipped byte
    (models / f"{corrupt}.pt").write_bytes(bytes(data))
    (models / f"{foreign}.pt").write_bytes((models / f"{kept[-1]}.pt").read_bytes() if kept[-1] != foreign else b"")
    (models / f"{foreign}.sha256").write_bytes((models / f"{kept[-1]}.sha256").read_bytes())
    if kept[-1] == foreign:  # two kept models only: a checkpoint of another trial, checksum and all
        (models / f"{foreign}.pt").write_bytes((models / f"{corrupt}.pt").read_bytes())
    cases = [
        (["--trial", "0123456789abcdef"], "no trial '0123456789abcdef'"),
        (["--trial", dropped[0]], f"trial {dropped[0]} kept no model"),
        (["--trial", corrupt], f"models/{corrupt}.pt fails its checksum"),
        (["--trial", foreign], f"models/{foreign}.pt"),
        (["--recommended", "mnist__nowhere__small"], "unknown scenario 'mnist__nowhere__small'"),
        ([], "name one trial: --trial UID or --recommended"),
        (["--trial", kept[-1], "--recommended"], "name one trial"),
        (["--trial", "x"], "no trial 'x'"),
    ]
    for argv, fragment in cases:
        to = tmp_path / "never"
        with pytest.raises(SystemExit) as exit_info:
            main(["export", str(out), *argv, "--to", str(to)])
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        assert exit_info.value.code == 2, (argv, err)
        assert len(lines) == 1 and lines[0].startswith("flipsearch: error:") and fragment in lines[0], (argv, err)
        assert not to.exists()
    with pytest.raises(SystemExit) as exit_info:  # not a sweep at all
        main(["export", str(tmp_path / "empty"), "--recommended", "--to", str(tmp_path / "never")])
    assert exit_info.value.code == 2 and "holds no sweep results" in capsys.readouterr().err


@pytest.mark.ray
@pytest.mark.slow
def test_the_reports_flip_comparison_loads_the_kept_recommendation(front_sweep):
    from flipsearch.report.build import build_report

    out, _ = front_sweep
    s = build_report(out).scenarios[0]
    assert s.flips is not None and s.flips.error is None
    assert s.flips.rec.source == f"kept model {s.recommendation.point['trial_uid']}"
    assert s.flips.rec.reproduced is True
    assert all(p.kept for p in s.points) and not any("no kept model" in n for n in s.notes)


@pytest.mark.ray
@pytest.mark.slow
def test_a_report_on_other_objectives_names_its_front_points_without_a_kept_model(front_sweep, tmp_path):
    from flipsearch.report.build import build_report
    from flipsearch.results import read_results

    src, _ = front_sweep
    out = tmp_path / "copy"
    shutil.copytree(src, out, ignore=shutil.ignore_patterns("ray"))
    kept = kept_uids(str(out))
    rows = read_results(str(out))
    assert set(rows.loc[(rows["status"] == "ok") & rows["replicate_of"].isna(), "trial_uid"]) - kept  # some ruled out
    # The opposite trade-off. Following "worse on both" from a ruled-out trial (dominated by
    # a) ends on that front at a trial a still dominates: its front holds one the sweep dropped.
    other = build_report(str(out), objectives=["accuracy_new:min", "nfr:max"], flips=False).scenarios[0]
    assert [p.kept for p in other.points] == [p.row["trial_uid"] in kept for p in other.points]
    missing = [p.label for p in other.points if not p.kept]
    assert missing and [n for n in other.notes if "no kept model" in n] == [
        f"front point{'s' if len(missing) > 1 else ''} {', '.join(missing)} {'have' if len(missing) > 1 else 'has'} "
        "no kept model (the sweep kept the front of accuracy_new:max, nfr:min); `flipsearch export` cannot ship it: "
        "rerun it with its command and --save-model"]
    assert any(p["kept_model"] is False for p in build_report(str(out), objectives=["accuracy_new:min", "nfr:max"],
                                                               flips=False).to_json()["scenarios"][0]["front"])


# ------------------------------------------------------------------ --keep all, then front on resume, and none


@pytest.mark.ray
@pytest.mark.slow
def test_keep_all_keeps_pack_members_and_repairs_then_front_prunes_on_resume(packed_sweep, tmp_path):
    from flipsearch import sweep
    from flipsearch.results import read_results

    path, finished, summary = packed_sweep  # tests/conftest.py: bct packs of 2 and neurecover, --keep all
    out = str(tmp_path / "out")
    shutil.copytree(finished, out)  # the shared sweep stays as it finished
    rows = read_results(out)
    ok = set(rows.loc[rows["status"] == "ok", "trial_uid"])
    assert kept_uids(out) == ok and summary.models_kept == len(ok)
    done = rows["status"] == "ok"
    assert ((rows["pack_size"] == 2) & done).any() and ((rows["method"] == "neurecover") & done).any()  # both kept

    # Resumed with --keep front: the models the front rules out go at once, new trials are judged as they land.
    summary = sweep(path, out=out, resume=True, trials_per_scenario=7, keep="front", quiet=True)
    rows = read_results(out)
    assert summary.trials_run == 2 and kept_uids(out) == independent_front(rows)

    none = str(tmp_path / "none")
    sweep(path, out=none, trials_per_scenario=2, keep="none", quiet=True)
    assert len(read_results(none)) == 2 and models_on_disk(none) == []
