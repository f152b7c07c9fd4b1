"""Errors a user can act on. The CLI prints them as one line, no traceback.

Exit status 2 means bad input the user can fix (a usage error); 1 means a runtime
failure (a crashed trial, an unreachable cluster, a corrupt results file).
"""


class FlipsearchError(Exception):
    """A runtime failure, reported as one line; exit status 1."""

    exit_code = 1


class UsageError(FlipsearchError):
    """Bad input (config, flag, name, missing file); exit status 2."""

    exit_code = 2


class DatasetMissingError(UsageError):
    """The dataset's files are not on disk and --download was not given."""


class DivergedError(FlipsearchError):
    """A training loss became NaN or infinite; the trial is recorded as `diverged`."""
