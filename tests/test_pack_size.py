"""`pack: auto`: the measured throughput curve, the choice of K, and a sweep that packs by it
(and keeps its choice on --resume)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from flipsearch import TrialConfig, read_results, sweep
from flipsearch.cli import cli
from flipsearch.pack_size import CurvePoint, choose_pack_size, throughput_curve
from flipsearch.search.space import load_space


def curve(*rates):
    return [CurvePoint(2 ** i, 1.0, r) for i, r in enumerate(rates)]


def test_choice_is_the_smallest_pack_near_the_best_rate():
    assert choose_pack_size(curve(100, 190, 300, 310)) == 4        # 300 is within 10 % of 310
    assert choose_pack_size(curve(100, 95)) == 1                   # packing does not pay
    assert choose_pack_size(curve(100, 190, 300, 310), cap=2) == 2  # no more than a slot's trials
    assert choose_pack_size(curve(100)) == 1


def test_curve_on_digits_doubles_while_the_rate_grows(monkeypatch):
    """The curve's logic on a device of known throughput: packs of K really trained on the
    digits scenario's update data, under a clock that advances by what K models on n samples
    cost on a device that saturates at 4 (samples/s: 100, 190, 300, then 310 at 8). The curve
    must double 1, 2, 4, 8 and stop at 8 (gained < 10 %), whatever this machine's speed."""
    import flipsearch.pack_size as pack_size

    rate = {1: 100.0, 2: 190.0, 4: 300.0, 8: 310.0, 16: 320.0}
    clock, trained = [0.0], []
    real_fit_pack = pack_size.fit_pack

    def fit_pack(models, x, y, recipes, **kw):
        trained.append((len(models), len(x)))
        if len(trained) <= 2:  # the warm-up calls train for real: the data and models are real
            real_fit_pack(models, x, y, recipes, **kw)
        clock[0] += len(models) * len(x) / rate[len(models)]

    monkeypatch.setattr(pack_size, "fit_pack", fit_pack)
    monkeypatch.setattr(pack_size, "time", type("Clock", (), {"perf_counter": staticmethod(lambda: clock[0])}))
    points = throughput_curve(TrialConfig(dataset="digits", method="fd"), budget_s=1e9)
    assert [p.k for p in points] == [1, 2, 4, 8]
    assert [round(p.rate, 6) for p in points] == [100.0, 190.0, 300.0, 310.0]
    assert [k for k, _ in trained] == [1, 1, 1, 2, 4, 8]  # two warm-ups, then one pack per point
    assert choose_pack_size(points) == 4                # 300 is within 10 % of 310
    # On this machine's real clock: a curve of doublings from 1 that ends by its own rules.
    real = throughput_curve(TrialConfig(dataset="digits", method="fd"), sizes=(1, 2))
    assert [p.k for p in real] in ([1], [1, 2]) and all(p.rate > 0 and p.seconds > 0 for p in real)


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
