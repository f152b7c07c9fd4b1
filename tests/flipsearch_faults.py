"""Model factories that inject real faults into sweeps (used as `--model flipsearch_faults:NAME`).

They run on Ray workers, which find this module through PYTHONPATH (set in conftest.py
before Ray starts) and the marker directory through FLIPSEARCH_FAULT_DIR.
"""

from __future__ import annotations

import os
import signal

import torch
from torch import nn

from flipsearch.models import small


def raising(num_classes, input_shape):
    """A model bug that one configuration triggers: M2 of class-incremental (10 outputs)."""
    if num_classes == 10:
        raise RuntimeError("injected fault: cannot build a 10-class model\nsecond line must not show")
    return small(num_classes, input_shape)


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


def kill_once(num_classes, input_shape):
    """The first worker that builds it is SIGKILLed (as a lost spot node would be); later
    attempts build a normal model."""
    marker = os.path.join(os.environ["FLIPSEARCH_FAULT_DIR"], "killed-once")
    if not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return small(num_classes, input_shape)
