"""What `flipsearch report` prints fits the terminal: a table wider than it is stacked, the
counts under each value come on request, and summary.md keeps the full tables."""

from __future__ import annotations

from click.testing import CliRunner

from flipsearch.cli import cli
from flipsearch.report.build import build_report
from flipsearch.report.document import document, flatten
from flipsearch.report.blocks import Code, Para
from flipsearch.report.terminal import plain, render_terminal, stacked, table_text
from test_report import baseline_replicate, replicate, row, sweep_dir


def _replicated_sweep(tmp_path) -> str:
    """Front points and the ce baseline with three seeds each, in two arrangements: the
    method × arrangement table carries intervals and per-seed counts (its widest form)."""
    rows = []
    for arr in ("exclusive-op", "class-incremental"):
        a = dict(row("bct", 0.92, 0.010, trial=0, lambda_c=1.0, arrangement=arr), trial_uid=f"a-{arr}")
        ce = dict(row("ce", 0.90, 0.040, trial=1, arrangement=arr), trial_uid=f"ce-{arr}")
        rows += [a, ce, replicate(a, 0, 0.96, 0.012), replicate(a, 1, 0.94, 0.014),
                 baseline_replicate(arr, 0, 0.92, 0.030), baseline_replicate(arr, 1, 0.88, 0.050)]
    return sweep_dir(tmp_path, rows)


def test_tables_fit_the_width_and_prose_is_left_to_the_terminal(tmp_path):
    rep = build_report(_replicated_sweep(tmp_path), flips=False)
    wide = render_terminal(rep, width=10_000)
    assert max(len(line) for line in wide.splitlines()) > 120           # what used to be printed
    blocks = flatten(document(rep))                   # prose and commands are left whole (commands stay copyable)
    prose = {plain(p.parts) for b in blocks for p in ([b] if isinstance(b, Para) else getattr(b, "text", []))
             if isinstance(p, Para)} | {"  $ " + b.text for b in blocks if isinstance(b, Code)}
    for width in (80, 120):
        text = render_terminal(rep, width=width)
        assert all(len(line) <= width or line in prose for line in text.splitlines()), width
        assert "Method × arrangement" in text and "- bct" in text            # the table, stacked
    rep.write(str(tmp_path / "report"))
    md = (tmp_path / "report" / "summary.md").read_text()
    assert "| bct |" in md and " / 500" in md                          # the files keep the full table and counts


def test_counts_on_request(tmp_path):
    out = sweep_dir(tmp_path, [row("bct", 0.92, 0.010, trial=0, lambda_c=1.0), row("ce", 0.90, 0.020, trial=1)])
    rep = build_report(out, flips=False)
    assert "10 / 400" in render_terminal(rep, width=200, counts=True)        # ce's BR counts, in the tables only
    assert "10 / 400" not in render_terminal(rep, width=200, counts=False)
    res = CliRunner().invoke(cli, ["report", out, "--no-flips", "--out", str(tmp_path / "r")], env={"COLUMNS": "80"})
    assert res.exit_code == 0, res.output
    shown = res.stdout.split("\nreport: ")[0]
    assert "10 / 400" not in shown
    res = CliRunner().invoke(cli, ["report", out, "--no-flips", "--counts", "--out", str(tmp_path / "r")],
                             env={"COLUMNS": "80"})
    assert "10 / 400" in res.stdout


def test_stacking_keeps_every_value_and_marks_what_it_cuts():
    headers, rows = ["method", "NFR", "hyperparameters"], [["bct", "1.00 %\n5 / 500", "lambda_c=1"], "a group"]
    assert table_text(headers, rows, width=None) == table_text(headers, rows, width=200)
    text = stacked(headers, rows, width=30)
    assert text.splitlines() == ["  - bct", "      NFR: 1.00 % · 5 / 500", "      hyperparameters: lambda…",
                                 "  a group"]
