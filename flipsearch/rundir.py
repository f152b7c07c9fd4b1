"""A sweep's output directory: every file it holds named once, and its sweep record typed.

    OUT/
      sweep.json        SweepRecord: what was searched and how (written by the sweep)
      trials/           one Parquet part per result row (results.py)
      optuna.journal    the Optuna studies (search/studies.py)
      scheduler.json    MO-ASHA's rungs, for --resume and the report's early-stopping section
      pack_auto.json    measured pack sizes (search/auto_pack.py)
      references/       content-addressed reference models (references.py)
      models/           kept models of trials, with sha256 sidecars (kept_models.py, search.keep)
      report/           `flipsearch report`'s default output
      ray/              Ray Tune's experiment state
      sweep.lock        held while a sweep runs

Writer and reader reach these names through `RunDir`, so they cannot drift; a damaged
`sweep.json` is refused here, in one line.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

from .errors import UsageError
from .storage import Storage

__all__ = ["RunDir", "SweepRecord"]


@dataclass
class SweepRecord:
    """`sweep.json`: what a sweep searched and how, as the sweep wrote it and the report reads it.

    Args:
        name: the search space's name.
        path: the search-space file it was read from.
        objectives: "metric:max|min" strings.
        constraints: "metric<=value"-style strings.
        scenarios: scenario keys (one Optuna study each), in the space's order.
        seeds: the scenario seeds searched.
        methods: {method: {hyperparameter: [distribution kind, its arguments]}}.
        scenario_options, templates: the scenario settings (per scenario key for templates).
        cpus_per_trial: the CPUs Ray reserved per trial (the report re-runs with as many threads);
            None in records written before it was recorded.
        keep: which trials kept their M2 in models/ (`search.keep`: front, all, none); None in
            records written before models were kept.
        The other fields are the `search:` settings of the same names.
    """

    name: str = ""
    path: str = ""
    objectives: list[str] = field(default_factory=list)
    constraints: list[str] = field(default_factory=list)
    scenarios: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    scenario_options: dict[str, Any] = field(default_factory=dict)
    sampler: str | None = None
    trials_per_scenario: int | None = None
    scheduler: str | None = None
    reduction_factor: float | None = None
    grace_period: float | None = None
    replicates: int = 0
    pack: Any = None
    budget: str | None = None
    cpus_per_trial: float | None = None
    keep: str | None = None
    templates: dict[str, Any] = field(default_factory=dict)

    # field -> the JSON types it accepts (None is accepted by the optional ones)
    _TYPES = {"name": str, "path": str, "objectives": list, "constraints": list, "scenarios": list,
              "seeds": list, "methods": dict, "scenario_options": dict, "templates": dict}

    def to_json(self) -> dict[str, Any]:
        """The record as sweep.json holds it."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Any, where: str = "sweep.json") -> "SweepRecord":
        """A record from sweep.json's content. Keys it does not know are ignored and missing
        ones take their defaults (records of older versions); a content of the wrong shape
        is a one-line `UsageError` naming `where`."""
        if not isinstance(data, dict):
            raise UsageError(f"{where} holds {type(data).__name__}, not a sweep record; restore it, or "
                             "pass --objective/--constraint explicitly after moving it away")
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for key, kind in cls._TYPES.items():
            if key in values and values[key] is not None and not isinstance(values[key], kind):
                raise UsageError(f"{where}: {key!r} should be a {kind.__name__}, found "
                                 f"{type(values[key]).__name__} {str(values[key])[:40]!r}; the file is damaged")
        for key in ("objectives", "constraints", "scenarios"):
            bad = [x for x in values.get(key) or () if not isinstance(x, str)]
            if bad:
                raise UsageError(f"{where}: {key!r} should list strings, found {bad[0]!r}; the file is damaged")
        if values.get("cpus_per_trial") is None and isinstance(data.get("search"), dict):
            values["cpus_per_trial"] = data["search"].get("cpus_per_trial")  # an early layout
        cpus = values.get("cpus_per_trial")
        if cpus is not None and (isinstance(cpus, bool) or not isinstance(cpus, (int, float)) or cpus <= 0):
            raise UsageError(f"{where}: 'cpus_per_trial' should be a positive number, found {cpus!r}")
        return cls(**{k: v for k, v in values.items() if v is not None or k not in cls._TYPES})

    @property
    def threads(self) -> int:
        """Threads a re-run of one trial gets: the CPUs a trial had (at least 1)."""
        return max(1, int(self.cpus_per_trial or 1))


class RunDir:
    """The files of one sweep's output directory (a local path or an object-store URI).

    Each name below is the only spelling of that file in the code base; `path`, `uri` and
    `sub` give where it is, the readers below read the small JSON files.
    """

    SWEEP = "sweep.json"
    TRIALS = "trials"
    JOURNAL = "optuna.journal"
    SCHEDULER = "scheduler.json"
    PACK_AUTO = "pack_auto.json"
    REFERENCES = "references"
    MODELS = "models"
    REPORT = "report"
    RAY = "ray"
    LOCK = "sweep.lock"

    def __init__(self, out: "str | os.PathLike | Storage"):
        self.storage = out if isinstance(out, Storage) else Storage.open(out)

    @property
    def uri(self) -> str:
        """The directory's URI (an absolute path when local)."""
        return self.storage.uri

    def path(self, name: str) -> str:
        """The filesystem path of one of the names above."""
        return self.storage.path(name)

    def child_uri(self, name: str) -> str:
        """The URI of one of the names above (options in the URI's query carried over)."""
        return self.storage.child_uri(name)

    def sub(self, name: str) -> Storage:
        """The storage of one of the sub-directories above (references, trials, report, …)."""
        return self.storage.sub(name)

    # ------------------------------------------------------------------ sweep.json

    def write_record(self, record: SweepRecord) -> None:
        """Write sweep.json (atomically)."""
        self.storage.write_bytes(json.dumps(record.to_json(), indent=2, default=str).encode(), self.SWEEP)

    def read_record(self) -> SweepRecord | None:
        """sweep.json as a `SweepRecord`; None when absent (rows copied without it). A file
        that is not JSON, or not a record, is a one-line `UsageError`."""
        if not self.storage.exists(self.SWEEP):
            return None
        where = f"{self.uri}/{self.SWEEP}"
        try:
            data = json.loads(self.storage.read_bytes(self.SWEEP))
        except (ValueError, OSError) as e:
            raise UsageError(f"{where} is not valid JSON ({str(e).splitlines()[0]}); restore it or pass "
                             "--objective/--constraint explicitly after moving it away") from None
        return SweepRecord.from_json(data, where)

    # ------------------------------------------------------------------ scheduler.json

    def read_scheduler_state(self) -> dict | None:
        """scheduler.json as written by the sweep's scheduler (None when absent)."""
        if not self.storage.exists(self.SCHEDULER):
            return None
        return json.loads(self.storage.read_bytes(self.SCHEDULER))

    def write_scheduler_state(self, state: dict) -> None:
        """Write scheduler.json (atomically)."""
        self.storage.write_bytes(json.dumps(state).encode(), self.SCHEDULER)
