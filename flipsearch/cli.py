"""The `flipsearch` command line: thin click commands over the library.

Every error a user can act on is one line on stderr with exit status 2 (bad input) or 1
(runtime); `--debug` shows the traceback instead.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from .errors import FlipsearchError, UsageError

_DEBUG = False
_ARGV: list[str] = []  # the command line as given (for the resume hint)


def _parse_settings(pairs: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--set expects KEY=VALUE, got {pair!r}")
        out[key.strip()] = _scalar(value.strip())
    return out


def _scalar(text: str) -> Any:
    """'3' -> 3, '0.5' -> 0.5, 'true' -> True, anything else stays a string."""
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (int, float, bool, str, list)) else text


def _parse_classes(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        return tuple(int(c) for c in text.split(",") if c.strip())
    except ValueError:
        raise UsageError(f"--critical-classes expects comma-separated class ids like 3,5; got {text!r}") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.version_option(package_name="flipsearch")
def cli(debug: bool) -> None:
    """flipsearch: find the model update that keeps what the old model got right.

    \b
    Typical use:
      flipsearch list                                  what exists
      flipsearch trial --method bct --set lambda_c=1   one update, all metrics
      flipsearch sweep search_spaces/smoke.yaml --out runs/smoke
      flipsearch report runs/smoke                     Pareto fronts, tables, plots
      flipsearch export runs/smoke --recommended digits__exclusive-op__small --to ship/
    """
    global _DEBUG
    _DEBUG = debug
    import logging

    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


class PackSize(click.ParamType):
    """`--pack`: an integer K >= 1, or `auto`."""

    name = "K|auto"

    def convert(self, value, param, ctx):
        if value == "auto" or isinstance(value, int):
            return value
        try:
            k = int(value)
        except ValueError:
            k = 0
        if k < 1:
            self.fail(f"{value!r} is not an integer >= 1 or 'auto'", param, ctx)
        return k


PACK = PackSize()


def scenario_options(f):
    """Options shared by `trial` and `split`: which data and how it is arranged."""
    opts = [
        click.option("--dataset", default="digits", show_default=True,
                     help="digits (embedded), fashion-mnist, cifar10, cifar100, imagefolder:PATH, arrays:PATH"),
        click.option("--arrangement", default="exclusive-op", show_default=True,
                     help="exclusive-op, exclusive-dev, inclusive-1-5, inclusive-4-5, class-incremental"),
        click.option("--seed", default=0, show_default=True, type=int, help="Seed of the split and the training."),
        click.option("--old-fraction", default=0.5, show_default=True, type=float,
                     help="class-incremental: share of classes M1 knows."),
        click.option("--val-fraction", default=0.1, show_default=True, type=float,
                     help="Validation split (what a search selects on), as a share of D_update."),
        click.option("--data-root", default=None, help="Where torchvision datasets live (default ~/.cache/flipsearch/data)."),
        click.option("--download", is_flag=True, help="Download a torchvision dataset that is not on disk."),
        click.option("--scale", default=1.0, show_default=True, type=float,
                     help="Use this stratified share of the training pool (the test set keeps --test-scale)."),
        click.option("--test-scale", default=1.0, show_default=True, type=float,
                     help="Use this stratified share of the test set."),
        click.option("--train", "train_path", default=None, help="Explicit D_train (.npz or image folder)."),
        click.option("--update", "update_path", default=None, help="Explicit D_update (with --train and --test)."),
        click.option("--test", "test_path", default=None, help="Explicit test set (with --train and --update)."),
        click.option("--val", "val_path", default=None, help="Explicit validation split (default: carved from D_update)."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _config(**kw):
    """A `TrialConfig` from the shared scenario options (and trial's own)."""
    from .config import TrialConfig

    paths = [kw.pop(k) for k in ("train_path", "update_path", "test_path")]
    given = [p for p in paths if p]
    if given and len(given) != 3:
        raise UsageError("--train, --update and --test go together: give all three")
    return TrialConfig(explicit=tuple(paths) if given else None, **kw)


@cli.command()
@scenario_options
@click.option("--method", default="ce", show_default=True, help="ce, bct, fd, mpt, neurecover, or module.path:name")
@click.option("--model", default=None, help="small, cnn8, resnet18 or module.path:factory (default: by dataset).")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="Override a method hyperparameter (lambda_c=0.5) or training setting "
                   "(epochs=3, update.lr=0.01, m1.epochs=5). Repeatable.")
@click.option("--critical-classes", default=None, help="Comma-separated class ids that must not flip, e.g. 3,5.")
@click.option("--critical-mask", default=None, type=click.Path(), help=".npy bool mask over the test set.")
@click.option("--old-model", default=None, type=click.Path(), help="Your trained M1 (state_dict), instead of training one.")
@click.option("--save-model", default=None, type=click.Path(), help="Save M2's state_dict here (and M1's beside it as *.m1.pt).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch's intra-op threads (default: torch's own). Float sums follow the thread count: "
                   "a sweep row's reproduce command gives the row's, for a bitwise re-run.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (config, metrics, timings).")
def trial(method, model, settings, critical_classes, critical_mask, old_model, save_model, device, threads, as_json,
          **scen):
    """Run one update trial: train M1, update it into M2 with METHOD, report every metric
    on the validation split (val_*) and the test set."""
    from .trial import run_trial

    if threads is not None:
        import torch

        torch.set_num_threads(threads)

    cfg = _config(method=method, model=model, critical_classes=_parse_classes(critical_classes),
                  critical_mask=critical_mask, old_model=old_model, device=device, **scen)
    cfg = cfg.with_settings(_parse_settings(settings))
    if save_model:
        _check_writable(save_model)
    show_bar = not as_json and sys.stderr.isatty()
    bar = _progress_bar() if show_bar else None
    try:
        result = run_trial(cfg, progress=bar)
    finally:
        if bar is not None:
            bar.close()
    if save_model and result.status == "ok":
        import torch

        from .references import cpu_state

        # CPU copies: a checkpoint of CUDA tensors does not load on a machine without CUDA
        torch.save(cpu_state(result.model), save_model)
        torch.save(cpu_state(result.old_model), _m1_path(save_model))
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2, default=str))
    else:
        _print_trial(result)
    if result.status != "ok":
        raise FlipsearchError(f"trial {result.status}: {result.error}")


def _m1_path(save_model: str) -> str:
    root, ext = os.path.splitext(save_model)
    return f"{root}.m1{ext or '.pt'}"


def _check_writable(path: str) -> None:
    """Refuse an output path before any training, so no result is lost after it."""
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UsageError(f"--save-model {path!r} is a directory; give a file name")
    if not os.path.isdir(parent):
        raise UsageError(f"--save-model {path!r}: directory {parent!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"--save-model {path!r}: directory {parent!r} is not writable")
    if os.path.exists(path):
        click.echo(f"flipsearch: note: --save-model overwrites {path}", err=True)


class _progress_bar:
    """A tqdm bar on stderr, one per training phase."""

    def __init__(self):
        self._bar = None
        self._phase = None

    def __call__(self, phase: str, done: int, total: int, loss: float) -> None:
        from tqdm import tqdm

        if phase != self._phase:
            self.close()
            self._bar = tqdm(total=total, desc=phase, unit="epoch", file=sys.stderr, leave=False)
            self._phase = phase
        self._bar.update(done - self._bar.n)
        self._bar.set_postfix(loss=f"{loss:.4f}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _print_trial(result) -> None:
    m = result.metrics
    c = result.config
    click.echo(f"{c.method} on {c.dataset} / {c.arrangement} (model {c.model_name}, seed {c.seed}): {result.status}")
    if result.hparams:
        click.echo("  hyperparameters: " + ", ".join(f"{k}={v}" for k, v in result.hparams.items()))
    click.echo(f"  {'metric':<18} {'validation':>10} {'test':>10}")
    for key in ("accuracy_old", "accuracy_new", "accuracy_gain", "accuracy_ratio", "nfr", "pfr", "br", "btc", "bec",
                "nfr_old_classes", "critical_nfr", "critical_br"):
        if key in m or f"val_{key}" in m:
            val, test = m.get(f"val_{key}"), m.get(key)
            fmt = lambda v: "" if v is None else f"{v:.4f}"  # noqa: E731
            click.echo(f"  {key:<18} {fmt(val):>10} {fmt(test):>10}")
    if "n_negative_flips" in m:
        click.echo(f"  negative flips: {int(m['n_negative_flips'])} of {int(m['n'])} test samples "
                   f"({int(m.get('val_n_negative_flips', 0))} of {int(m.get('val_n', 0))} validation)")
    click.echo("  references: " + ", ".join(f"{k}={v}" for k, v in result.references.items()))
    click.echo("  seconds: " + ", ".join(f"{k}={v:.2f}" for k, v in result.timings.items()))


@cli.command()
@scenario_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def split(as_json, **scen):
    """Show how an arrangement splits a dataset: sizes, overlap, per-class counts."""
    from .arrangements import describe
    from .trial import load_scenario

    info = describe(load_scenario(_config(**scen)))
    if as_json:
        click.echo(json.dumps(info, indent=2, default=str))
    else:
        for k, v in info.items():
            click.echo(f"{k:<22} {v}")


@cli.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_cmd(as_json):
    """List datasets, arrangements, models, methods (with hyperparameters) and metrics."""
    from .api import list_methods
    from .arrangements import ARRANGEMENTS
    from .data import DATASETS
    from .metrics import CRITICAL_PREFIX, METRICS, OLD_CLASSES_SUFFIX
    from .models import MODELS

    info = {
        "datasets": DATASETS,
        "arrangements": ARRANGEMENTS,
        "models": {k: (v.__doc__ or "").strip().splitlines()[0] for k, v in MODELS.items()},
        "methods": list_methods(),
        "metrics": {k: f"{v.meaning} = {v.formula}" for k, v in METRICS.items()},
        "metric_variants": {
            f"NAME{OLD_CLASSES_SUFFIX}": "NAME on the test samples of the classes M1 knows (class-incremental)",
            f"{CRITICAL_PREFIX}NAME": "NAME on the critical samples (--critical-classes / --critical-mask)",
            "val_NAME": "NAME on the validation split: what a sweep's objectives, constraints and fronts read",
        },
    }
    if as_json:
        click.echo(json.dumps(info, indent=2, default=str))
        return
    for section in ("datasets", "arrangements", "models", "metrics", "metric_variants"):
        click.echo(f"{section.replace('_', ' ')}:")
        for k, v in info[section].items():
            click.echo(f"  {k:<22} {v}")
    click.echo("methods:")
    for name, m in info["methods"].items():
        needs = f"  (needs {', '.join(m['needs'])})" if m["needs"] else ""
        click.echo(f"  {name:<22} {m['summary']}{needs}")
        for h in m["hyperparameters"]:
            click.echo(f"      {h['name']:<18} {h['type']:<7} default {h['default']!s:<12} range {h['range']:<22} {h['help']}")


@cli.command()
@click.argument("space_files", nargs=-1, required=True, type=click.Path())
@click.option("--out", required=True, help="Output directory or URI (s3://, gs://, file://) for rows, studies, models.")
@click.option("--resume", is_flag=True, help="Continue an interrupted sweep in --out without redoing finished trials.")
@click.option("--address", default=None, help="Ray cluster to join: auto, ray://HOST:10001 or HOST:6379 (default: local Ray).")
@click.option("--objective", "objectives", multiple=True, metavar="METRIC[:max|min]",
              help="Override the file's objectives (repeatable), e.g. accuracy_new:max --objective nfr:min. "
                   "Evaluated on the validation split.")
@click.option("--constraint", "constraints", multiple=True, metavar="METRIC<=VALUE",
              help="Override the file's constraints (repeatable), e.g. 'accuracy_new>=0.9'.")
@click.option("--sampler", type=click.Choice(["nsga2", "tpe", "random", "grid"]), default=None,
              help="Optuna sampler (default: the file's, else nsga2).")
@click.option("--scheduler", type=click.Choice(["fifo", "mo-asha", "stratified-asha"]), default=None,
              help="fifo: every trial runs its full budget; mo-asha: multi-objective successive halving "
                   "stops dominated trials early; stratified-asha: the same, each trial ranked against its "
                   "own method and categorical choices, and every trial of an arm that ends near the front "
                   "run in full (default: the file's, else fifo).")
@click.option("--trials", "trials_per_scenario", type=click.IntRange(min=1), default=None,
              help="Trials per scenario (overrides search.trials_per_scenario).")
@click.option("--replicates", type=click.IntRange(min=0), default=None,
              help="After the search, re-run each front point and the ce baseline with K other seeds.")
@click.option("--concurrency", type=click.IntRange(min=1), default=None, help="Trials running at once.")
@click.option("--pack", type=PACK, default=None,
              help="Train up to K configurations of one scenario and loss method together in one Ray trial "
                   "(one row each; 1 = one configuration per trial; auto = measure the best K per scenario).")
@click.option("--keep", type=click.Choice(["front", "all", "none"]), default=None,
              help="Which trials keep their M2 in OUT/models/: each scenario's validation front (default), "
                   "all, or none.")
@click.option("--cpus-per-trial", type=click.FloatRange(min=0), default=None,
              help="CPUs Ray reserves per trial (and torch threads it uses).")
@click.option("--gpus-per-trial", type=click.FloatRange(min=0), default=None, help="Fractions pack trials: 0.25 = four per GPU.")
@click.option("--scale", type=click.FloatRange(min=0, min_open=True, max=1), default=None,
              help="Use this stratified share of each dataset's training pool (a laptop-sized run of a paper preset).")
@click.option("--test-scale", type=click.FloatRange(min=0, min_open=True, max=1), default=None,
              help="Use this stratified share of each test set (default: the file's, else all of it).")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Override training epochs (M1, references and updates).")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help="Override scenario.KEY (e.g. scenario.seeds=[0,1]).")
@click.option("--quiet", is_flag=True, help="No progress lines.")
@click.option("--verbose", is_flag=True, help="Also show Ray's and Ray Tune's own output (log lines, tables).")
def sweep(space_files, out, resume, address, quiet, verbose, settings, **options):
    """Search methods x hyperparameters x scenarios in SPACE_FILES with Ray Tune + Optuna.

    Several files are merged in order, so `search_spaces/ce.yaml search_spaces/bct.yaml`
    compares both methods on one Pareto front per scenario. SIGTERM stops it like Ctrl-C
    (finished trials kept, the resume command printed; exit 143, Ctrl-C 130)."""
    from . import signals
    from .api import sweep as run

    signals.route_sigterm()  # until Ray starts (the sweep routes it again after ray.init)
    summary = run(list(space_files), out=out, resume=resume, address=address, quiet=quiet, verbose=verbose,
                  settings=_parse_settings(settings), **options)
    click.echo(summary.line())
    if summary.interrupted:
        click.echo(f"interrupted: resume with  {_resume_command(space_files, out)}", err=True)
        sys.exit(signals.EXIT_SIGTERM if signals.received() else 130)


def _resume_command(space_files, out) -> str:
    """The command that resumes this sweep: the same arguments, with --resume once."""
    import shlex

    given = _ARGV if "sweep" in _ARGV else ["sweep", *space_files, "--out", out]
    return "flipsearch " + " ".join(shlex.quote(a) for a in given if a != "--resume") + " --resume"


@cli.command()
@click.argument("sweep_dir", metavar="OUT")
@click.option("--out", "report_dir", default=None, help="Where to write the report files (default: OUT/report).")
@click.option("--objective", "objectives", multiple=True, metavar="METRIC[:max|min]",
              help="Objectives of the fronts, two or three (repeatable; default: the sweep's).")
@click.option("--constraint", "constraints", multiple=True, metavar="METRIC<=VALUE",
              help="Constraints on the fronts, table and recommendation (repeatable; default: the sweep's), "
                   "e.g. 'nfr<=0.01' --constraint 'accuracy_new>=0.85'.")
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="What to print: a readable summary, or one JSON document for scripts.")
@click.option("--no-flips", is_flag=True,
              help="Skip re-running each scenario's recommendation and ce baseline for the flip comparison "
                   "(two trials per scenario; seconds each on digits).")
@click.option("--counts", is_flag=True,
              help="Print the counts and intervals under each value too (summary.md and index.html always have "
                   "them); tables wider than the terminal are stacked, one row after the other.")
def report(sweep_dir, report_dir, objectives, constraints, output_format, no_flips, counts):
    """Pareto fronts, the method x arrangement table, plots and a recommendation for the sweep in OUT.

    Writes index.html (self-contained), summary.md, front.parquet, trials.csv and PNG plots to --out.
    Fronts are chosen on validation metrics and reported on test.
    """
    from .api import build_report
    from .api import report_dir as where
    from .report.terminal import render_terminal

    show = output_format != "json" or sys.stderr.isatty()     # a JSON consumer may read stderr with stdout

    def progress(step: str, done: int, total: int) -> None:
        if show:
            click.echo(f"[flipsearch report] {done}/{total} {step}", err=True)

    target = where(sweep_dir, report_dir)                    # an --out that is a file: refused before any work
    rep = build_report(sweep_dir, objectives or None, constraints or None, progress=progress, flips=not no_flips)
    progress("writing index.html, summary.md and the plots", 1, 1)
    written = rep.write(target)
    if output_format == "json":
        click.echo(json.dumps({**rep.to_json(), "files": written}, indent=2, allow_nan=False))
    else:
        click.echo(render_terminal(rep, counts=counts), nl=False)
        click.echo(f"\nreport: {rep.report_dir}/index.html (and summary.md, front.parquet, trials.csv, "
                   f"{len(written) - 4} plots)")


@cli.command()
@click.argument("sweep_dir", metavar="OUT")
@click.option("--trial", default=None, metavar="UID", help="The trial to export: its trial_uid (or a unique prefix).")
@click.option("--recommended", default=None, is_flag=False, flag_value="", metavar="[SCENARIO]",
              help="Export the report's recommendation (in SCENARIO; may be omitted with one scenario).")
@click.option("--to", "to", required=True, type=click.Path(), help="Directory to write m2.pt, m1.pt, card.json, card.md.")
def export(sweep_dir, trial, recommended, to):
    """Export a kept model of the sweep in OUT: M2, its M1 and the model card."""
    from .api import export_update

    if (trial is None) == (recommended is None):
        raise UsageError("name one trial: --trial UID or --recommended [SCENARIO]")
    written = export_update(sweep_dir, to, trial, recommended=True if recommended == "" else recommended)
    click.echo(f"exported trial to {to}: " + ", ".join(os.path.basename(p) for p in written))


@cli.command()
@click.option("--old", "old_path", required=True, type=click.Path(), help="M1's checkpoint (a state_dict, .pt).")
@click.option("--new", "new_path", required=True, type=click.Path(), help="M2's checkpoint (a state_dict, .pt).")
@click.option("--dataset", required=True, help="digits, fashion-mnist, cifar10, cifar100, imagefolder:PATH, arrays:PATH")
@click.option("--model", default=None, help="Architecture of both: small, cnn8, resnet18 or module.path:factory "
                                            "(default: by dataset).")
@click.option("--split", default="test", show_default=True,
              help="test, val (the arrangement's validation set), update (D_update) or train (D_train).")
@click.option("--arrangement", default="exclusive-op", show_default=True, help="Arrangement of --split update/train/val.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the arrangement's split.")
@click.option("--old-fraction", default=0.5, show_default=True, type=float, help="class-incremental: share of old classes.")
@click.option("--critical-classes", default=None, help="Comma-separated class ids that must not flip, e.g. 3,5.")
@click.option("--critical-mask", default=None, type=click.Path(), help=".npy bool mask over the split's samples.")
@click.option("--out", default=None, help="Where to write index.html, audit.json, flips.parquet "
                                          "(default: ./compare-OLD-NEW/).")
@click.option("--data-root", default=None, help="Where torchvision datasets live.")
@click.option("--download", is_flag=True, help="Download a torchvision dataset that is not on disk.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of the summary.")
def compare(old_path, new_path, dataset, model, split, arrangement, seed, old_fraction, critical_classes,
            critical_mask, out, data_root, download, device, as_json):
    """Flip audit of two checkpoints: every metric with counts, the flip matrix, the flipped images."""
    from pathlib import Path

    from .audit import AUDIT_FILES
    from .audit import compare as run_compare

    out = out or f"compare-{Path(old_path).stem}-{Path(new_path).stem}"
    audit = run_compare(old_path, new_path, dataset, model=model, split=split, arrangement=arrangement, seed=seed,
                        old_fraction=old_fraction, critical_classes=_parse_classes(critical_classes),
                        critical_mask=critical_mask, out=out, data_root=data_root, download=download, device=device)
    files = {name: str(Path(out) / name) for name in AUDIT_FILES}
    if as_json:
        click.echo(json.dumps({**audit.to_json(), "files": files}, indent=2, allow_nan=False))
    else:
        click.echo(audit.summary(), nl=False)
        click.echo(f"  files: {files['index.html']} (and audit.json, flips.parquet)")


class MaxRate(click.ParamType):
    """`--max METRIC=T`: a rate metric and its threshold."""

    name = "METRIC=T"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        metric, sep, text = str(value).partition("=")
        try:
            return metric.strip(), float(text)
        except ValueError:
            self.fail(f"{value!r} is not METRIC=THRESHOLD, e.g. er_new=0.1", param, ctx)


@cli.command()
@click.argument("sweep_dir", metavar="[OUT]", required=False)
@click.option("--trial", "trial_uid", default=None, help="With OUT: the kept trial to gate (its trial_uid or a prefix).")
@click.option("--old", "old_path", default=None, type=click.Path(), help="M1's checkpoint (a state_dict, .pt).")
@click.option("--new", "new_path", default=None, type=click.Path(), help="M2's checkpoint (a state_dict, .pt).")
@click.option("--dataset", default=None, help="With --old/--new: digits, fashion-mnist, cifar10, cifar100, "
                                              "imagefolder:PATH, arrays:PATH")
@click.option("--model", default=None, help="Architecture of both (default: by dataset).")
@click.option("--split", default="test", show_default=True,
              help="test, val (the arrangement's validation set), update (D_update) or train (D_train).")
@click.option("--arrangement", default="exclusive-op", show_default=True, help="Arrangement of --split update/train/val.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the arrangement's split.")
@click.option("--old-fraction", default=0.5, show_default=True, type=float, help="class-incremental: share of old classes.")
@click.option("--max-nfr", type=float, default=None, help="Rule: NFR's upper bound must be at most this rate.")
@click.option("--max-br", type=float, default=None, help="Rule: BR's upper bound must be at most this rate.")
@click.option("--min-accuracy-gain", type=float, default=None,
              help="Rule: fail when the accuracy gain is significantly below this (0: no significant regression; "
                   "exact McNemar).")
@click.option("--critical-classes", default=None, help="Comma-separated class ids whose samples are critical, e.g. 0,6.")
@click.option("--max-critical-nfr", type=float, default=None,
              help="Rule: NFR on the critical samples must be at most this (0: no critical flip at all).")
@click.option("--per-class-max-br", type=float, default=None,
              help="Rule: every class's BR at most this (upper bounds, Holm-corrected over the classes).")
@click.option("--max", "max_rates", type=MaxRate(), multiple=True,
              help="Rule on any rate: nfr, br, er_new, their critical_ and _old_classes forms (repeatable).")
@click.option("--confidence", type=float, default=0.95, show_default=True, help="Confidence of every bound and test.")
@click.option("--data-root", default=None, help="Where torchvision datasets live.")
@click.option("--download", is_flag=True, help="Download a torchvision dataset that is not on disk.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1")
@click.option("--json", "as_json", is_flag=True, help="Print the whole verdict as one JSON document.")
def gate(sweep_dir, trial_uid, old_path, new_path, dataset, model, split, arrangement, seed, old_fraction, max_nfr,
         max_br, min_accuracy_gain, critical_classes, max_critical_nfr, per_class_max_br, max_rates, confidence,
         data_root, download, device, as_json):
    """May this update ship? Exact bounds and tests on two models' predictions.

    \b
      flipsearch gate --old m1.pt --new m2.pt --dataset digits --max-nfr 0.02 --min-accuracy-gain 0
      flipsearch gate OUT --trial UID --max-nfr 0.01 --per-class-max-br 0.05

    Each rule prints its estimate, its bound and the counts. Exit status 0: every rule
    passes; 1: a rule fails; 2: bad input."""
    from . import api
    from .gate import GateRules

    rules = GateRules(max_nfr=max_nfr, max_br=max_br, min_accuracy_gain=min_accuracy_gain,
                      critical_classes=_parse_classes(critical_classes), max_critical_nfr=max_critical_nfr,
                      per_class_max_br=per_class_max_br, max_rates=tuple(max_rates), confidence=confidence).check()
    pair = (old_path, new_path, dataset)
    if sweep_dir is not None:
        if any(pair):
            raise UsageError("gate either OUT --trial UID or --old/--new/--dataset, not both")
        if not trial_uid:
            raise UsageError("gate OUT needs --trial UID (the kept trial to gate)")
        verdict = api.gate_trial(sweep_dir, trial_uid, rules, device=device)
    else:
        if trial_uid:
            raise UsageError("--trial goes with a sweep directory: flipsearch gate OUT --trial UID")
        if not all(pair):
            raise UsageError("gate needs --old M1.pt --new M2.pt --dataset D (or OUT --trial UID)")
        verdict = api.gate(old_path, new_path, dataset, rules, model=model, split=split, arrangement=arrangement,
                           seed=seed, old_fraction=old_fraction, data_root=data_root, download=download,
                           device=device)
    if as_json:
        click.echo(json.dumps(verdict.to_json(), indent=2, allow_nan=False))
    else:
        click.echo(verdict.summary(), nl=False)
    if not verdict.passed:
        sys.exit(1)


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the click group, turning errors into one-line messages."""
    global _ARGV
    _ARGV = list(sys.argv[1:] if argv is None else argv)
    try:
        code = cli.main(args=argv, prog_name="flipsearch", standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("flipsearch: interrupted", err=True)
        sys.exit(_interrupted_status())
    except click.ClickException as e:
        click.echo(f"flipsearch: error: {e.format_message()}", err=True)
        sys.exit(e.exit_code)
    except FlipsearchError as e:
        if _DEBUG:
            raise
        click.echo(f"flipsearch: error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("flipsearch: interrupted", err=True)
        sys.exit(_interrupted_status())
    except Exception as e:  # an unexpected bug: still one line, traceback with --debug
        if _DEBUG or "--debug" in (argv or sys.argv):
            raise
        first = str(e).splitlines()[0] if str(e) else ""
        click.echo(f"flipsearch: error: {type(e).__name__}: {first} (rerun with --debug for the traceback)", err=True)
        sys.exit(1)


def _interrupted_status() -> int:
    from . import signals

    return signals.EXIT_SIGTERM if signals.received() else 130


if __name__ == "__main__":
    main()
