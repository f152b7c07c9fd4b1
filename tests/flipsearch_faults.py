"""Model factories that inject real faults into sweeps (used as `--model flipsearch_faults:NAME`).

They run on Ray workers, which find this module through PYTHONPATH (set in conftest.py
before Ray starts) and the marker directory through FLIPSEARCH_FAULT_DIR. Each fault fires
while the model trains, never while it is built: the sweep driver builds every scenario's
model before Ray starts (`preflight_space`), and a fault there would refuse the sweep (or,
for `kill_once`, kill the driver) instead of failing a trial.
"""

from __future__ import annotations

import os
import signal
import time

import torch
from torch import nn

from flipsearch.models import small


class _Faulty(nn.Module):
    """`inner`, with `fault()` called on every training forward pass."""

    def __init__(self, inner: nn.Module, fault):
        super().__init__()
        self.inner, self._fault = inner, fault

    def forward(self, x):
        if self.training:
            self._fault()
        return self.inner(x)


def _raise_ten_classes():
    raise RuntimeError("injected fault: a 10-class model cannot train\nsecond line must not show")


def raising(num_classes, input_shape):
    """A model bug that one configuration triggers: training M2 of class-incremental (10 outputs)."""
    model = small(num_classes, input_shape)
    return _Faulty(model, _raise_ten_classes) if num_classes == 10 else model


class _NaNWhileTraining(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        out = self.inner(x)
        return out * torch.nan if self.training else out


def nan_when_training(num_classes, input_shape):
    """Its training loss is NaN from the first step: the trial must end `diverged`."""
    return _NaNWhileTraining(small(num_classes, input_shape))


def _kill_first_time():
    marker = os.path.join(os.environ["FLIPSEARCH_FAULT_DIR"], "killed-once")
    if not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)


def kill_once(num_classes, input_shape):
    """The first worker that trains it is SIGKILLed (as a lost spot node would be); later
    attempts train a normal model."""
    return _Faulty(small(num_classes, input_shape), _kill_first_time)


# --------------------------------------------------------------------------- a gate for fault tests

GATE = "FLIPSEARCH_GATE"            # a directory: the gate's markers
GATE_ROWS = "FLIPSEARCH_GATE_ROWS"  # training starting once the sweep has this many rows waits
GATE_OUT = "FLIPSEARCH_GATE_OUT"    # the sweep's local --out (its rows are OUT/trials/part-*.parquet)
RELEASE = "release"                 # the file in GATE that opens it


def _rows(out: str) -> int:
    if not out:
        return 0
    trials = os.path.join(out, "trials")
    return sum(n.startswith("part-") for n in os.listdir(trials)) if os.path.isdir(trials) else 0


class _Gated(nn.Module):
    """`inner`, whose first training step waits (for ever) for GATE/release once the sweep
    has GATE_ROWS rows, and first writes GATE/waiting-PID so that the test knows."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner, self._passed = inner, False

    def forward(self, x):
        if self.training and not self._passed:
            self._passed = True
            gate = os.environ.get(GATE)
            if gate and _rows(os.environ.get(GATE_OUT, "")) >= int(os.environ.get(GATE_ROWS, "0")):
                open(os.path.join(gate, f"waiting-{os.getpid()}"), "w").close()
                while not os.path.exists(os.path.join(gate, RELEASE)):
                    time.sleep(0.05)
        return self.inner(x)


def gated(num_classes, input_shape):
    """A `small` model that makes the moment of a fault an event instead of a race: with
    FLIPSEARCH_GATE set, a model that starts training once the sweep has FLIPSEARCH_GATE_ROWS
    rows (default 0: every one) waits until the test creates FLIPSEARCH_GATE/release. So a
    sweep cannot finish, nor move past that point, before the test has done what it wants
    (signalled it, looked at its processes). Without FLIPSEARCH_GATE it is a plain `small`
    (a resume run by the test session's own Ray)."""
    return _Gated(small(num_classes, input_shape))
