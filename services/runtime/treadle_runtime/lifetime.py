"""A service started by the launcher (`treadle up`, the demo, a test mesh) dies with it.

The launcher names itself in TREADLE_LAUNCHER_PID; the service asks the kernel for SIGTERM when
its parent exits (PR_SET_PDEATHSIG, Linux) and stops at once if the launcher is already gone.
Key decision: this runs in the service at startup, not between fork and exec (subprocess's
preexec_fn). Python code in a forked child runs the parent's fork handlers, gRPC's among them,
and those abort the child when the launcher has gRPC threads at work (a test process with live
channels), so the service would die before it started.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal

LAUNCHER_PID = "TREADLE_LAUNCHER_PID"
_PR_SET_PDEATHSIG = 1


def die_with_launcher() -> None:
    """Arrange SIGTERM on the launcher's exit, if a launcher started this process."""
    launcher = os.environ.get(LAUNCHER_PID, "")
    if not launcher.isdigit():
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the launcher's own shutdown stops it
        return
    if os.getppid() != int(launcher):  # it exited before the request took effect
        raise SystemExit(0)
