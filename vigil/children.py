"""Child processes (the embedded broker, the console) that never outlive Vigil."""

from __future__ import annotations

import ctypes
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Run in the child before exec: the kernel sends it SIGTERM when Vigil dies.

    A clean stop terminates children itself; this covers a crash or a SIGKILL, which would
    otherwise leave a broker and a console running with nobody to stop them.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
