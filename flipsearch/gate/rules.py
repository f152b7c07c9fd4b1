"""Release-gate rules and their verdict on a flip audit (the statistics are `gate.stats`).

    rules = GateRules(max_nfr=0.01, min_accuracy_gain=0.0, per_class_max_br=0.05)
    rules.check()                                   # bad input: a one-line UsageError, before any work
    verdict = evaluate(audit, rules)                # audit: flipsearch.audit.FlipAudit
    verdict.passed, verdict.summary(), verdict.to_json()

Each rule reads counts from the audit, never rates: a rate rule k of n (`stats.rate_test`),
the accuracy rule the discordant pairs (`stats.mcnemar`), a per-class rule one rate per
class with Holm's correction (`stats.holm`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError
from ..metrics import CRITICAL_PREFIX, OLD_CLASSES_SUFFIX
from . import stats

# Rates a `max` rule may bound ("lower is better", whole-number counts): the base metrics,
# each also on the critical samples and on the old classes where the audit has them.
RATE_METRICS = ("nfr", "br", "er_new")


def rate_metric_names() -> list[str]:
    """Every metric a `max` rule may bound: `RATE_METRICS` and their critical_ / _old_classes forms."""
    return [p + m + s for m in RATE_METRICS for p, s in (("", ""), (CRITICAL_PREFIX, ""), ("", OLD_CLASSES_SUFFIX))]


@dataclass(frozen=True)
class GateRules:
    """What an update must show to ship. `max_rates` maps a rate metric (`rate_metric_names`)
    to its threshold; `max_nfr`, `max_br` and `max_critical_nfr` are its named forms.
    `min_accuracy_gain` guards against a significant accuracy loss (a gain below it);
    `per_class_max_br` bounds every class's BR (Holm-corrected); `critical_classes` define
    the critical samples of the `critical_*` rules. Rules hold at `confidence`."""

    max_nfr: float | None = None
    max_br: float | None = None
    min_accuracy_gain: float | None = None
    critical_classes: tuple[int, ...] = ()
    max_critical_nfr: float | None = None
    per_class_max_br: float | None = None
    max_rates: tuple[tuple[str, float], ...] = ()
    confidence: float = 0.95

    def rates(self) -> list[tuple[str, float]]:
        """Every rate rule as (metric, threshold), named forms first."""
        named = [("nfr", self.max_nfr), ("br", self.max_br), ("critical_nfr", self.max_critical_nfr)]
        return [(m, t) for m, t in named if t is not None] + list(self.max_rates)

    def check(self) -> "GateRules":
        """Every check that needs no data: a one-line `UsageError` for the first problem."""
        if not (isinstance(self.confidence, (int, float)) and 0.5 <= self.confidence < 1):
            raise UsageError(f"--confidence must be in [0.5, 1), got {self.confidence}")
        known = rate_metric_names()
        for metric, t in self.rates():
            if metric not in known:
                raise UsageError(f"no gate rule on metric {metric!r}; rate rules bound one of: {', '.join(known)}")
            _in_unit(f"threshold of {metric}", t)
        if self.per_class_max_br is not None:
            _in_unit("--per-class-max-br", self.per_class_max_br)
        if self.min_accuracy_gain is not None:
            g = self.min_accuracy_gain
            if not (isinstance(g, (int, float)) and not math.isnan(g) and -1 <= g <= 1):
                raise UsageError(f"--min-accuracy-gain is a change of accuracy in [-1, 1], got {g}")
        uses_critical = any(m.startswith(CRITICAL_PREFIX) for m, _ in self.rates())
        if uses_critical and not self.critical_classes:
            raise UsageError("a critical_ rule needs --critical-classes (the classes whose samples are critical)")
        if self.critical_classes and not uses_critical:
            raise UsageError("--critical-classes goes with a critical rule, e.g. --max-critical-nfr 0.01")
        if not (self.rates() or self.per_class_max_br is not None or self.min_accuracy_gain is not None):
            raise UsageError("give at least one rule: --max-nfr, --max-br, --min-accuracy-gain, --max-critical-nfr, "
                             "--per-class-max-br or --max METRIC=T")
        return self


def _in_unit(what: str, t: Any) -> None:
    if not (isinstance(t, (int, float)) and not isinstance(t, bool) and 0 <= t <= 1):
        raise UsageError(f"{what} must be a rate in [0, 1], got {t}")


@dataclass
class RuleResult:
    """One rule's outcome: what it tested, the estimate, the bound, the counts."""

    rule: str              # e.g. "nfr <= 0.01"
    kind: str              # rate | accuracy | per_class
    passed: bool
    estimate: float
    bound: float           # rate: upper bound; accuracy: upper bound of the gain
    count: int | None
    denominator: int | None
    p_value: float
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "kind": self.kind, "passed": self.passed, "estimate": _num(self.estimate),
                "bound": _num(self.bound), "count": self.count, "denominator": self.denominator,
                "p_value": _num(self.p_value), **self.detail}


def _num(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


@dataclass
class GateVerdict:
    """All rules' outcomes; `passed` when every rule passed. `accuracy` is the McNemar
    summary (always given, rule or not)."""

    rules: list[RuleResult]
    accuracy: stats.McNemar
    confidence: float
    n: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rules)

    def to_json(self) -> dict[str, Any]:
        a = self.accuracy
        return {**self.meta, "passed": self.passed, "confidence": self.confidence, "n": self.n,
                "failed": [r.rule for r in self.rules if not r.passed],
                "rules": [r.to_json() for r in self.rules],
                "accuracy_change": {"gain": _num(a.gain), "negative_flips": a.b, "positive_flips": a.c,
                                    "p_regression": a.p_regression, "p_improvement": a.p_improvement,
                                    "p_two_sided": a.p_two_sided, "verdict": a.verdict,
                                    "gain_upper_bound": _num(a.gain_upper_bound())}}

    def summary(self) -> str:
        """Terminal lines: one per rule (PASS/FAIL, estimate, bound, counts), then the verdict."""
        pct = lambda v: "n/a" if v is None or math.isnan(v) else f"{v * 100:.2f} %"  # noqa: E731
        where = self.meta.get("title", "gate")
        lines = [f"{where}: {self.n} samples, one-sided bounds at {self.confidence * 100:g} % confidence"]
        for r in self.rules:
            mark = "PASS" if r.passed else "FAIL"
            if r.kind == "rate":
                lines.append(f"  {mark}  {r.rule:<26} estimate {pct(r.estimate)} ({r.count} / {r.denominator}), "
                             f"upper bound {pct(r.bound)}")
            elif r.kind == "accuracy":
                d = r.detail
                lines.append(f"  {mark}  {r.rule:<26} gain {r.estimate * 100:+.2f} % ({d['positive_flips']} positive, "
                             f"{d['negative_flips']} negative flips), upper bound {r.bound * 100:+.2f} %, "
                             f"p(gain >= {_fmt(d['threshold'])}) = {r.p_value:.3g}: {d['verdict']}")
            else:
                failed = [c for c in r.detail["classes"] if not c["passed"]]
                lines.append(f"  {mark}  {r.rule:<26} {len(r.detail['classes']) - len(failed)} of "
                             f"{len(r.detail['classes'])} classes pass (Holm); worst "
                             f"{pct(r.estimate)}")
                for c in r.detail["classes"]:
                    lines.append(f"          class {c['name']:<12} {'pass' if c['passed'] else 'FAIL'}  "
                                 f"{pct(c['estimate'])} ({c['count']} / {c['denominator']}), upper bound "
                                 f"{pct(c['bound'])} at {c['confidence'] * 100:.3g} %, Holm p {c['p_holm']:.3g}")
        a = self.accuracy
        lines.append(f"  accuracy change {a.gain * 100:+.2f} % (exact McNemar: {a.c} positive vs {a.b} negative flips, "
                     f"two-sided p = {a.p_two_sided:.3g}): {a.verdict}")
        failed = [r.rule for r in self.rules if not r.passed]
        lines.append("verdict: PASS" if not failed else f"verdict: FAIL ({len(failed)} of {len(self.rules)} rules: "
                     + ", ".join(failed) + ")")
        return "\n".join(lines) + "\n"


def _fmt(t: float) -> str:
    return f"{t:g}"


def evaluate(audit, rules: GateRules) -> GateVerdict:
    """The verdict of `rules` on `audit` (a `FlipAudit` with its critical mask, if any)."""
    from ..audit.core import Rate

    rules.check()
    conf = rules.confidence
    results: list[RuleResult] = []
    for metric, t in rules.rates():
        rate = audit.metrics.get(metric)
        if not isinstance(rate, Rate):
            why = ("M1 has as many outputs as there are classes" if metric.endswith(OLD_CLASSES_SUFFIX)
                   else "no critical samples given")
            raise UsageError(f"metric {metric!r} does not apply to this comparison ({why})")
        k, n = int(rate.count), int(rate.denominator)
        test = stats.rate_test(k, n, t, conf)
        results.append(RuleResult(f"{metric} <= {_fmt(t)}", "rate", test.passed, test.estimate, test.bound, k, n,
                                  test.p_value, {"metric": metric, "threshold": t}))
    m = audit.metrics
    acc = stats.mcnemar(int(m["n_negative_flips"]), int(m["n_positive_flips"]), int(m["n"]), conf)
    if rules.min_accuracy_gain is not None:
        g = rules.min_accuracy_gain
        p = acc.gain_p_value(g)
        results.append(RuleResult(f"accuracy gain >= {_fmt(g)}", "accuracy", p > 1 - conf, acc.gain,
                                  acc.gain_upper_bound(), acc.c - acc.b, acc.n, p,
                                  {"metric": "accuracy_gain", "threshold": g, "negative_flips": acc.b,
                                   "positive_flips": acc.c, "verdict": acc.verdict}))
    if rules.per_class_max_br is not None:
        results.append(_per_class(audit, rules.per_class_max_br, conf))
    return GateVerdict(results, acc, conf, audit.n)


def _per_class(audit, t: float, conf: float) -> RuleResult:
    """Per-class BR ≤ t over the classes M1 got at least one sample right of, Holm-corrected."""
    pc = audit.per_class
    rows = [r for r in pc.to_dict("records") if int(r["n_old_right"]) > 0]
    alpha = 1.0 - conf
    tests = [stats.rate_test(int(r["n_negative_flips"]), int(r["n_old_right"]), t, conf) for r in rows]
    h = stats.holm([x.p_value for x in tests], alpha)
    classes = []
    for r, x, rej, adj, level in zip(rows, tests, h.rejected, h.adjusted, h.levels):
        classes.append({"class": int(r["class"]), "name": str(r["name"]), "passed": bool(rej),
                        "estimate": x.estimate, "count": x.k, "denominator": x.n, "p_value": x.p_value,
                        "p_holm": float(adj), "confidence": 1.0 - float(level),
                        "bound": stats.upper_bound(x.k, x.n, 1.0 - float(level))})
    worst = max((c["estimate"] for c in classes), default=float("nan"))
    passed = bool(classes) and all(c["passed"] for c in classes)
    return RuleResult(f"per-class br <= {_fmt(t)}", "per_class", passed, worst,
                      max((c["bound"] for c in classes), default=float("nan")), None, None,
                      max((c["p_holm"] for c in classes), default=float("nan")),
                      {"metric": "br", "threshold": t, "correction": "holm", "classes": classes})


__all__ = ["GateRules", "GateVerdict", "RuleResult", "evaluate", "rate_metric_names", "RATE_METRICS"]
