"""Stop an embedded Ray's processes when the driver that started it dies, however it dies.

Ray fate-shares its GCS server and raylet with the driver, but not everything: after the
driver is SIGKILLed (an OOM kill, `kill -9`, a lost terminal) Ray 2.60's DashboardAgent and
RuntimeEnvAgent notice their raylet is gone and then hang reporting it to the dead GCS,
forever (measured: still running minutes later). On a machine shared with others such
leftovers pile up.

`start_reaper(roots)` starts this module as a small watchdog in its own session. It holds
the read end of a pipe whose write end only the driver has, so it sees EOF the moment the
driver exits. Until then it keeps a list of every descendant of `roots` (the processes
`ray.init` started), each with its start time; then it stops what is left of them (SIGTERM,
then SIGKILL), never a process it did not list (a reused pid has another start time), and
exits. Linux only (it reads /proc); elsewhere `start_reaper` does nothing.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

_POLL_S = 1.0
_GRACE_S = 2.0
_HANDLES: list = []  # the driver side: each keeps its pipe's write end open for the driver's life


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of a live process, else None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in (b"Z", b"X"):  # a zombie is dead
        return None
    return int(fields[1]), int(fields[19])


def descendants(roots: list[int]) -> dict[int, int]:
    """{pid: start time} of `roots` and every process below them."""
    parents: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st is not None:
                parents.setdefault(st[0], []).append(int(name))
                starts[int(name)] = st[1]
    found: dict[int, int] = {}
    todo = [p for p in roots if p in starts]
    while todo:
        pid = todo.pop()
        if pid in found:
            continue
        found[pid] = starts[pid]
        todo += parents.get(pid, [])
    return found


def _alive(known: dict[int, int]) -> list[int]:
    return [pid for pid, start in known.items() if (_stat(pid) or (0, None))[1] == start]


def watch(driver_fd: int, roots: list[int]) -> None:
    """The watchdog's loop: list the descendants of `roots` until `driver_fd` hits EOF
    (the driver is gone), then stop the ones still running."""
    me = os.getpid()
    known: dict[int, int] = {}
    while True:
        known.update(descendants(roots + list(known)))
        known.pop(me, None)
        ready, _, _ = select.select([driver_fd], [], [], _POLL_S)
        if ready and not os.read(driver_fd, 4096):
            break
    time.sleep(_GRACE_S)  # Ray's own fate-sharing and a clean ray.shutdown go first
    for sig in (signal.SIGTERM, signal.SIGKILL):
        left = _alive(known)
        for pid in left:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        if not left:
            return
        time.sleep(_GRACE_S)


def start_reaper(roots: list[int]) -> None:
    """Start the watchdog for the processes under `roots` (this process's embedded Ray)."""
    if not os.path.isdir("/proc") or not roots:
        return
    read_fd, write_fd = os.pipe()
    try:
        # Run as a plain script (-I: no site, no PYTHONPATH): it needs the standard library only,
        # not flipsearch's imports (torch, pandas), so it costs a few MB and starts at once.
        proc = subprocess.Popen([sys.executable, "-I", os.path.abspath(__file__), str(read_fd), *map(str, roots)],
                                pass_fds=(read_fd,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError:
        os.close(write_fd)
        return
    finally:
        os.close(read_fd)
    _HANDLES.append((proc, write_fd))  # the write end stays open (and non-inheritable) until we exit


def main(argv: list[str]) -> None:
    """`python -m flipsearch.search.reaper DRIVER_PID PID...`: watch the driver, stop the PIDs when it dies."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C in the driver's terminal is not for us
    watch(int(argv[0]), [int(p) for p in argv[1:]])


if __name__ == "__main__":
    main(sys.argv[1:])
