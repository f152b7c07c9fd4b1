"""`pack: auto`: the measured throughput curve, the choice of K, and a sweep that packs by it
(and keeps its choice on --resume)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from flipsearch import TrialConfig, read_results, sweep
from flipsearch.cli import cli
from flipsearch.pack_size import GAIN, CurvePoint, choose_pack_size, throughput_curve
from flipsearch.search.space import load_space


def curve(*rates):
    return [CurvePoint(2 ** i, 1.0, r) for i, r in enumerate(rates)]


def test_choice_is_the_smallest_pack_near_the_best_rate():
    assert choose_pack_size(curve(100, 190, 300, 310)) == 4        # 300 is within 10 % of 310
    assert choose_pack_size(curve(100, 95)) == 1                   # packing does not pay
    assert choose_pack_size(curve(100, 190, 300, 310), cap=2) == 2  # no more than a slot's trials
    assert choose_pack_size(curve(100)) == 1


def test_curve_on_digits_doubles_while_the_rate_grows():
    points = throughput_curve(TrialConfig(dataset="digits", method="fd"))
    assert [p.k for p in points] == [2 ** i for i in range(len(points))]
    assert all(p.rate > 0 and p.seconds > 0 for p in points)
    for i in range(1, len(points) - 1):  # every point but the last gained at least GAIN on those before
        assert points[i].rate >= GAIN * max(p.rate for p in points[:i])
    assert 1 <= choose_pack_size(points) <= points[-1].k


def test_pack_auto_is_a_search_key_and_a_cli_value(tiny_space):
    space = load_space(tiny_space(SPACE))
    assert space.pack == "auto"
    res = CliRunner().invoke(cli, ["sweep", tiny_space(SPACE), "--pack", "many"])
    assert res.exit_code == 2 and "'many' is not an integer >= 1 or 'auto'" in res.output
    assert load_space(tiny_space(SPACE.replace("scheduler: fifo", "scheduler: mo-asha"))).pack == "auto"


SPACE = """
name: t-pack-auto
scenario: {datasets: [digits], arrangements: [exclusive-op], models: [small], seeds: [0], training: {epochs: 2}}
objectives: [accuracy_new:max, nfr:min]
search: {sampler: random, trials_per_scenario: 6, seed: 2, concurrency: 1, pack: auto, scheduler: fifo}
methods:
  fd: {lambda: {loguniform: [0.5, 4.0]}}
"""


@pytest.mark.ray
@pytest.mark.slow
def test_sweep_packs_by_the_measured_size_and_resume_keeps_it(ray_local, tiny_space, tmp_path, capsys):
    out = tmp_path / "auto"
    sweep(tiny_space(SPACE), out=str(out))
    record = json.loads((out / "pack_auto.json").read_text())
    key = "digits__exclusive-op__small"
    k = record["sizes"][key]
    assert 1 <= k <= 6 and [p["k"] for p in record["curves"][key]][0] == 1
    assert f"pack auto: {key} -> {k}" in capsys.readouterr().err
    rows = read_results(str(out))
    assert len(rows) == 6 and (rows["status"] == "ok").all()
    assert rows["pack_size"].max() == k                     # full packs of the measured size
    for _, members in rows.groupby("pack_id"):
        assert len(members) == members["pack_size"].iloc[0] <= k

    sweep(tiny_space(SPACE), out=str(out), resume=True, trials_per_scenario=6 + k)
    assert "pack auto:" not in capsys.readouterr().err      # measured once: the record is reused
    rows = read_results(str(out))
    assert len(rows) == 6 + k and rows["trial_uid"].is_unique and rows["pack_size"].max() == k
