"""The report's data: what `build.build_report` computes and every writer reads.

Data classes only, importing no writer: the Markdown, terminal and HTML writers (`render`,
`html`, `interactive`) and the file export (`export`) depend on this module, never the other
way round.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..objectives import Constraint, Objective
from ..rundir import RunDir, SweepRecord
from ._format import int_text, safe_name
from .baselines import Band, Baseline
from .early import ConvergenceCurve, EarlyStopping
from .flips import FlipComparison
from .optimism import Optimism
from .plots import FrontPlotData, convergence_png, front_png
from .recommend import Recommendation, rule_text
from .selection import is_replicate
from .stats import Stat

__all__ = ["FrontPoint", "ScenarioReport", "ReportData"]


@dataclass
class FrontPoint:
    """One point of a validation-chosen front: the trial's row, its validation and test
    values, and its runs (the trial and its replicates, test values) with their statistics."""

    index: Any
    row: pd.Series                 # every column, as read
    val: pd.Series                 # validation values under the plain names
    test: pd.Series                # test values under the plain names
    runs: pd.DataFrame             # test values of the trial and its replicates
    stats: dict[str, Stat]
    searched_hparams: dict[str, Any]
    within_noise_of: list[str] = field(default_factory=list)   # dominating points it is not told apart from
    beyond_noise_of: list[str] = field(default_factory=list)   # dominating points beyond the seed spread
    kept: bool | None = None       # whether OUT/models/ holds its M2 (None: the sweep keeps none)

    @property
    def label(self) -> str:
        """"#<trial number>", how tables and plots name the point."""
        return f"#{int_text(self.row.get('trial_number'))}"

    @property
    def n_seeds(self) -> int:
        """Runs behind the point: the trial and its replicates."""
        return len(self.runs)


@dataclass
class ScenarioReport:
    """One scenario (dataset × arrangement × model) of the sweep."""

    key: str
    dataset: str
    arrangement: str
    model: str
    counts: dict[str, int]
    rows: pd.DataFrame             # every row of the scenario, as read
    val: pd.DataFrame              # the same rows, validation values under the plain names
    test: pd.DataFrame             # the same rows, test values under the plain names
    front: pd.DataFrame            # the front's rows, every column (validation-chosen)
    points: list[FrontPoint]
    m1: dict[str, float]           # objective metric -> M1's value (test)
    m1_val: dict[str, float]
    baseline: Baseline | None
    noise: dict[str, Band]         # nfr-like metric -> ce noise band (test, over seeds)
    hypervolume: list[float]       # validation hypervolume after each search trial, finishing order
    reference: list[float]
    curve: ConvergenceCurve
    recommendation: Recommendation
    rec_runs: pd.DataFrame         # test values of the recommended configuration's runs
    rec_stats: dict[str, Stat]
    optimism: Optimism
    costs: pd.DataFrame            # per method: trials, timed, median seconds
    plot: FrontPlotData
    notes: list[str] = field(default_factory=list)
    flips: FlipComparison | None = None
    _png: bytes | None = None

    @property
    def png(self) -> bytes:
        """The front plot as PNG (drawn on first use: only the files need it)."""
        if self._png is None:
            self._png = front_png(self.plot)
        return self._png

    @property
    def n_trials(self) -> int:
        """Rows of the scenario (search trials and replicate runs, any status)."""
        return int(sum(self.counts.values()))

    @property
    def png_name(self) -> str:
        """The front plot's file name in the report directory."""
        return f"front-{safe_name(self.key)}.png"

    @property
    def n_search(self) -> int:
        """Search trials of the scenario (replicate runs left out)."""
        return int((~is_replicate(self.rows)).sum())


@dataclass
class ReportData:
    """The whole report of one sweep: its scenarios, the method × arrangement table, the
    rows as read, and what it was chosen by. `export.Report` adds the files and the JSON."""

    out: str
    name: str
    objectives: list[Objective]
    constraints: list[Constraint]
    scenarios: list[ScenarioReport]
    table: pd.DataFrame
    counts: dict[str, int]
    searched: dict[str, Any] = field(default_factory=dict)
    report_dir: str = ""
    rows: pd.DataFrame = field(default_factory=pd.DataFrame)
    early: EarlyStopping | None = None
    reported: list[str] = field(default_factory=list)
    record: SweepRecord | None = None             # sweep.json (None when the run has none)
    flips_requested: bool = True

    HYPERVOLUME_PNG = "hypervolume.png"

    @property
    def hypervolume_png(self) -> bytes:
        """Validation hypervolume against cumulative update epochs, every scenario (drawn on first use)."""
        if getattr(self, "_hv_png", None) is None:
            self._hv_png = convergence_png(
                {s.key: (s.curve.epochs, s.curve.hypervolume) for s in self.scenarios},
                "cumulative update epochs (search trials in finishing order)",
                "Validation hypervolume against compute: " + " × ".join(str(o) for o in self.objectives))
        return self._hv_png

    @property
    def rule(self) -> str:
        """The recommendation rule in words."""
        return rule_text(self.objectives, self.constraints) + " (on validation metrics)"

    @property
    def n_replicates(self) -> int:
        """Replicate runs in the sweep."""
        return int(is_replicate(self.rows).sum()) if len(self.rows) else 0

    @property
    def journal(self) -> str:
        """The Optuna journal of the sweep (for `optuna-dashboard`)."""
        return RunDir(self.out).path(RunDir.JOURNAL)

    def front_frame(self) -> pd.DataFrame:
        """Every front point of every scenario, all columns, `scenario` first."""
        parts = [s.front.assign(scenario=s.key) for s in self.scenarios if len(s.front)]
        if not parts:
            return pd.DataFrame({"scenario": pd.Series(dtype=str)})
        df = pd.concat(parts, ignore_index=True, sort=False)
        return df[["scenario"] + [c for c in df.columns if c != "scenario"]]
