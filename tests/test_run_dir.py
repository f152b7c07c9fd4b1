"""The run directory has one owner (`flipsearch.rundir`): its sweep record written and read
through one type, and a broken or tampered run refused in one line before anything is written."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from flipsearch.cli import main
from flipsearch.errors import UsageError
from flipsearch.rundir import RunDir, SweepRecord
from flipsearch.search.space import load_space
from flipsearch.search.studies import StudyBook
from flipsearch.storage import Storage
from test_report import STUDY, row, sweep_dir

SPACE = """
name: tiny
scenario: {datasets: [digits], arrangements: [exclusive-op], models: [small], seeds: [0], training: {epochs: 1}}
objectives: ["accuracy_new:max", "nfr:min"]
search: {trials_per_scenario: 2, sampler: random, cpus_per_trial: 2}
methods:
  ce: {init: {choice: [old]}}
  bct: {lambda_c: {uniform: [0.1, 4.0]}}
"""


def _listing(root) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def _fails_in_one_line(argv, capsys, *fragments):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("[flipsearch report]")]
    assert e.value.code == 2 and len(lines) == 1 and lines[0].startswith("flipsearch: error:"), err
    assert "Traceback" not in err and all(f in lines[0] for f in fragments), lines[0]


# --------------------------------------------------------------------------- the record


def test_the_sweep_writes_the_record_the_report_reads(tmp_path):
    from flipsearch.search.sweep import _space_record

    path = tmp_path / "space.yaml"
    path.write_text(SPACE)
    record = _space_record(load_space(str(path)))
    run = RunDir(str(tmp_path / "out"))
    run.write_record(record)
    back = run.read_record()
    assert back == SweepRecord.from_json(json.loads(json.dumps(record.to_json(), default=str)))
    assert back.cpus_per_trial == 2 and back.threads == 2              # written now: the report reads it
    assert back.objectives == ["accuracy_new:max", "nfr:min"] and back.scenarios == [STUDY.format("exclusive-op")]


def test_old_records_still_open_and_damaged_ones_are_refused():
    old = {"name": "hand", "objectives": ["nfr:min"], "constraints": [], "scenarios": ["s"], "seeds": [0],
           "methods": {"ce": {}}, "scenario_options": {}, "unknown_later_key": 1}
    rec = SweepRecord.from_json(old)
    assert rec.cpus_per_trial is None and rec.threads == 1 and rec.objectives == ["nfr:min"]
    assert SweepRecord.from_json({**old, "search": {"cpus_per_trial": 3}}).threads == 3
    for bad, what in (([], "holds list"), ({"objectives": 5}, "'objectives' should be a list"),
                      ({"objectives": [1]}, "should list strings"), ({"cpus_per_trial": "two"}, "positive number")):
        with pytest.raises(UsageError, match=what):
            SweepRecord.from_json(bad)


def test_report_reruns_get_the_threads_a_trial_had(tmp_path, monkeypatch):
    """The drift the record fixes: the report read `search.cpus_per_trial`, which no sweep
    wrote, so its flip re-runs always ran on one thread. Real re-runs (digits, tiny)."""
    import torch

    from flipsearch.report.build import build_report

    quick = {"m1_epochs": 1, "update_epochs": 1, "epochs": 1}
    out = sweep_dir(tmp_path, [dict(row("bct", 0.92, 0.01, lambda_c=1.0), **quick),
                               dict(row("ce", 0.90, 0.02, trial=1), **quick)])
    record = json.loads((tmp_path / "hand" / "sweep.json").read_text())
    (tmp_path / "hand" / "sweep.json").write_text(json.dumps({**record, "cpus_per_trial": 2}))
    seen = []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (seen.append(n), real(n))[1])
    rep = build_report(out, flips=True)
    assert rep.scenarios[0].flips is not None                      # the re-runs happened
    assert seen and seen[0] == 2                                   # ...on the trial's two CPUs


# ------------------------------------------------------------------ broken run directories


def _hand_run(tmp_path, **changes):
    rows = [row("bct", 0.92, 0.01, lambda_c=1.0), row("ce", 0.90, 0.02, trial=1)]
    rows[0].update(changes)
    return sweep_dir(tmp_path, rows)


def test_rows_lacking_columns_are_one_line(tmp_path, capsys):
    out = _hand_run(tmp_path)
    for part in (tmp_path / "hand" / "trials").iterdir():
        pd.read_parquet(part).drop(columns=["study"]).to_parquet(part)
    before = _listing(out)
    _fails_in_one_line(["report", out, "--no-flips"], capsys, "no 'study' column")
    for part in (tmp_path / "hand" / "trials").iterdir():
        pd.read_parquet(part).assign(study=STUDY.format("exclusive-op")).drop(columns=["seed"]).to_parquet(part)
    _fails_in_one_line(["report", out, "--no-flips"], capsys, "no 'seed' column")
    assert _listing(out) == before


@pytest.mark.parametrize("content, fragment", [
    ("{not json", "is not valid JSON"),
    ('{"objectives": 5}', "'objectives' should be a list"),
    ('["a list"]', "not a sweep record"),
])
def test_a_corrupt_sweep_json_is_one_line(tmp_path, capsys, content, fragment):
    out = _hand_run(tmp_path)
    (tmp_path / "hand" / "sweep.json").write_text(content)
    before = _listing(out)
    _fails_in_one_line(["report", out], capsys, "sweep.json", fragment)
    assert _listing(out) == before


def test_an_output_path_that_is_a_file_is_one_line(tmp_path, capsys):
    out = _hand_run(tmp_path)
    (tmp_path / "taken").write_text("mine")
    before = _listing(tmp_path)
    _fails_in_one_line(["report", out, "--out", str(tmp_path / "taken")], capsys, "is an existing file")
    (tmp_path / "hand" / "report").write_text("mine too")              # the default OUT/report
    before = _listing(tmp_path)
    _fails_in_one_line(["report", out], capsys, "is an existing file")
    assert _listing(tmp_path) == before and (tmp_path / "taken").read_text() == "mine"


def test_a_tampered_critical_classes_cell_is_one_line(tmp_path, capsys):
    out = _hand_run(tmp_path, critical_classes="3,x")
    before = _listing(out)
    _fails_in_one_line(["report", out], capsys, "critical_classes", "'3,x'")
    assert _listing(out) == before


def test_a_lost_journal_is_rebuilt_and_said_with_its_row_count(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(SPACE)
    space = load_space(str(path))
    out = Storage.open(str(tmp_path / "out"))
    rows = pd.DataFrame([dict(row("bct", 0.92, 0.01, lambda_c=1.0, trial=0), trial_uid="u0"),
                         dict(row("ce", 0.90, 0.02, trial=1), trial_uid="u1")])

    def book():
        return StudyBook(space, out, space.objectives, space.constraints, space.sampler, space.search_seed)

    first = book()
    assert first.reconcile(rows) == {STUDY.format("exclusive-op"): 2}
    assert first.notes == [f"the Optuna journal {out.child_uri(RunDir.JOURNAL)} was missing; rebuilt it from 2 "
                           "result rows"]
    again = book()                                              # the journal is there now: nothing to say
    again.reconcile(rows)
    assert again.notes == []
    assert len(again.studies[STUDY.format("exclusive-op")].trials) == 2


def test_a_damaged_scheduler_state_is_one_line(tmp_path, capsys):
    out = _hand_run(tmp_path)
    (tmp_path / "hand" / "scheduler.json").write_text('{"core": {"recorded": 7}}')
    before = _listing(out)
    _fails_in_one_line(["report", out], capsys, "scheduler.json is damaged")
    assert _listing(out) == before
