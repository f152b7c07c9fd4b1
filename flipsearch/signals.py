"""SIGTERM handled like Ctrl-C: a clean stop, not an abort.

`ray stop`, `kill PID`, a batch scheduler's time limit and `ray job stop` send SIGTERM. Ray's
`ray.init` installs a handler that calls `sys.exit` wherever the driver happens to be, which
tears Ray Tune down mid-step (exit -6, a stack dump, trials left RUNNING). `route_sigterm()`
installs a handler that hands the signal to whatever SIGINT handler is active instead: Ray
Tune's own (it stops the experiment cleanly, as for Ctrl-C) during `Tuner.fit`, Python's
`KeyboardInterrupt` elsewhere. `received()` tells the CLI to exit 143 (128 + SIGTERM)
rather than 130. It must be installed after `ray.init` (which replaces it) and only works
in the main thread.
"""

from __future__ import annotations

import signal
import threading

_state = {"received": False}


def _on_sigterm(signum, frame):
    _state["received"] = True
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)  # Tune's graceful stop, or KeyboardInterrupt
    else:  # SIGINT ignored (a background job) or the C default: stop here
        raise KeyboardInterrupt


def route_sigterm() -> None:
    """Handle SIGTERM like SIGINT from now on (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


def received() -> bool:
    """Whether a SIGTERM arrived since `route_sigterm`."""
    return _state["received"]


EXIT_SIGTERM = 128 + signal.SIGTERM
