"""The report as a document — headings, paragraphs, tables, commands and plots — and its
Markdown and terminal renderings (`html.py` renders the same document as HTML).

Building the content once (`document`) keeps summary.md, index.html and the terminal
output saying the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

import pandas as pd

from ._format import fmt, fmt_hparams, fmt_unit, header, short
from .baselines import m1_metric
from .configs import STD_SUFFIX, searched_or_changed
from .tables import table_metrics

if TYPE_CHECKING:
    from .build import Report, ScenarioReport


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Para:
    text: str  # `backticks` mark code


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass
class Code:
    text: str


@dataclass
class Image:
    name: str
    png: bytes
    alt: str


Block = Union[Heading, Para, Table, Code, Image]

INFEASIBLE_MARK = " (infeasible)"


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: kv[0] != "ok"))


def paper1_block(report: "Report") -> Table:
    metrics = table_metrics(report.objectives)
    heads = ["dataset", "arrangement", "method", *(header(m) for m in metrics), "runs", "hyperparameters"]
    rows = []
    for _, r in report.table.iterrows():
        method = str(r["method"]) + ("" if r["feasible"] or not report.constraints else INFEASIBLE_MARK)
        if not r["n_runs"]:
            method = f"{r['method']} (no ok trial)"
        rows.append([str(r["dataset"]), str(r["arrangement"]), method,
                     *(fmt(m, r[m], r[m + STD_SUFFIX]) for m in metrics),
                     str(int(r["n_runs"])), fmt_hparams(r["hparams"]) if r["n_runs"] else ""])
    return Table(heads, rows)


def front_block(s: "ScenarioReport") -> Table:
    lst = s.listing
    metrics = [c for c in lst.columns if c not in ("method", "seed", "trial_number", "hparams", "all_hparams")]
    heads = ["method", "trial", "seed", *(header(m) for m in metrics), "hyperparameters"]
    rows = []
    for _, r in lst.iterrows():
        rows.append([str(r["method"]), _int_text(r["trial_number"]), _int_text(r["seed"]),
                     *(fmt(m, r[m]) for m in metrics), fmt_hparams(r["hparams"])])
    return Table(heads, rows)


def _int_text(v) -> str:
    return "" if v is None or pd.isna(v) else str(int(v))


def _scenario_blocks(report: "Report", s: "ScenarioReport") -> list[Block]:
    blocks: list[Block] = [Heading(2, f"{s.dataset} / {s.arrangement} / {s.model}")]
    facts = [f"{s.n_trials} trials ({_counts_text(s.counts)})"]
    for m, v in s.m1.items():
        old = m1_metric(m) or m
        facts.append(f"{short(old)} {fmt_unit(old, v)}")
    if s.baseline is not None:
        facts.append("`ce` baseline " + ", ".join(
            f"{short(o.metric)} {fmt_unit(o.metric, s.baseline[o.metric], s.baseline.get(o.metric + STD_SUFFIX))}"
            for o in report.objectives if o.metric in s.baseline.index))
    else:
        facts.append("no `ce` trial, so no baseline or noise floor")
    for m, b in s.noise.items():
        span = fmt_unit(m, b.mean) if b.high == b.low else \
            f"{fmt(m, b.low)}–{fmt_unit(m, b.high)} (mean {fmt_unit(m, b.mean)})"
        facts.append(f"noise floor ({short(m)} of `ce` over {b.n} run{'s' if b.n > 1 else ''}): {span}")
    blocks.append(Para("; ".join(facts) + "."))
    rec = s.recommendation
    if rec.point is None:
        blocks.append(Para(f"**Recommendation**: none — {'; '.join(rec.notes) or 'no successful trial'}."))
    else:
        p = rec.point
        values = ", ".join(f"{short(m)} {fmt_unit(m, p[m], p.get(m + STD_SUFFIX))}"
                           for m in dict.fromkeys([o.metric for o in report.objectives]
                                                  + [c.metric for c in report.constraints] + ["nfr", "br"])
                           if m in p.index)
        hp = fmt_hparams(_searched(report, p))
        if rec.feasible:
            blocks.append(Para(f"**Recommendation** ({rec.rule}): `{p['method']}` with {hp} — {values}."))
        else:
            blocks.append(Para(f"**No configuration satisfies** {', '.join(map(str, report.constraints))}. "
                               f"Binding: {', '.join(f'`{c}`' for c in rec.binding)} (relax "
                               f"{'it' if len(rec.binding) == 1 else 'them'}). "
                               f"Closest: `{p['method']}` with {hp} — {values}."))
        blocks.append(Code(rec.command or ""))
        blocks += [Para("Note: " + n + ("" if n.endswith(".") else ".")) for n in rec.notes]
    blocks.append(Image(s.png_name, s.png, f"trade-off in {s.key}"))
    if len(s.listing):
        blocks.append(Para(f"Pareto front ({len(s.listing)} point{'s' if len(s.listing) != 1 else ''}"
                           f"{', constrained' if report.constraints else ''}), best "
                           f"{report.objectives[0].metric} first:"))
        blocks.append(front_block(s))
    else:
        blocks.append(Para("The front is empty: no ok trial satisfies the constraints."))
    return blocks


def _searched(report: "Report", row: pd.Series) -> dict:
    return searched_or_changed(row, report.searched)


def document(report: "Report") -> list[Block]:
    n = sum(report.counts.values())
    blocks: list[Block] = [
        Heading(1, f"flipsearch report: {report.name}"),
        Para(f"Sweep `{report.out}`: {n} trials ({_counts_text(report.counts)}) in {len(report.scenarios)} "
             f"scenario{'s' if len(report.scenarios) != 1 else ''}. Objectives: "
             + ", ".join(f"`{o}`" for o in report.objectives) + ". Constraints: "
             + (", ".join(f"`{c}`" for c in report.constraints) or "none") + ". "
             f"Failed and diverged trials are left out of fronts and tables."),
        Heading(2, "Method × arrangement"),
        Para(f"Each method at its best operating point ({report.rule}); mean ± std over seeds where a "
             "configuration ran with several. acc ratio = acc(M1)/acc(M2) as paper 1 prints its accuracy "
             "improvement rate (below 1 when M2 is more accurate); acc gain = acc(M2) − acc(M1) in points; "
             "BR, BEC, NFR in %."
             + (" (infeasible): no configuration of the method meets the constraints; its closest one is shown."
                if report.constraints else "")),
        paper1_block(report),
    ]
    for s in report.scenarios:
        blocks += _scenario_blocks(report, s)
    blocks.append(Heading(2, "Convergence"))
    blocks.append(Image(report.HYPERVOLUME_PNG, report.hypervolume_png, "hypervolume over trials"))
    blocks.append(Para("Final hypervolume (reference: 0 for a maximised rate, 1 for a minimised one): "
                       + "; ".join(f"{s.key} {s.hypervolume[-1]:.4f}" if s.hypervolume else f"{s.key} —"
                                   for s in report.scenarios) + "."))
    return blocks


# --------------------------------------------------------------------------- renderers


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(report: "Report") -> str:
    lines: list[str] = []
    for b in document(report):
        if isinstance(b, Heading):
            lines += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, Para):
            lines += [b.text, ""]
        elif isinstance(b, Table):
            lines.append("| " + " | ".join(map(_md_cell, b.headers)) + " |")
            lines.append("|" + "|".join("---" for _ in b.headers) + "|")
            lines += ["| " + " | ".join(map(_md_cell, r)) + " |" for r in b.rows]
            lines.append("")
        elif isinstance(b, Code):
            lines += ["```sh", b.text, "```", ""]
        elif isinstance(b, Image):
            lines += [f"![{b.alt}]({b.name})", ""]
    return "\n".join(lines).rstrip() + "\n"


def aligned(headers: list[str], rows: list[list[str]], indent: str = "  ") -> str:
    """A plain-text table with columns padded to their widest cell."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    out = [indent + "  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip(),
           indent + "  ".join("-" * w for w in widths)]
    out += [indent + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(out)


def render_terminal(report: "Report") -> str:
    lines: list[str] = []
    for b in document(report):
        if isinstance(b, Heading):
            text = b.text
            lines += ["", text, ("=" if b.level == 1 else "-") * len(text)]
        elif isinstance(b, Para):
            lines.append(b.text.replace("**", "").replace("`", ""))
        elif isinstance(b, Table):
            lines.append(aligned(b.headers, b.rows))
        elif isinstance(b, Code):
            lines.append("  $ " + b.text)
        elif isinstance(b, Image):
            where = f"{report.report_dir.rstrip('/')}/{b.name}" if report.report_dir else b.name
            lines.append(f"  plot: {where}")
    return "\n".join(lines).strip() + "\n"
