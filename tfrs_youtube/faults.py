"""Fault injection for the fault suite (tests/test_faults.py): a process kills itself at a named point.

`point(name)` does nothing unless the environment variable `TFRS_YOUTUBE_KILL_AT` names that point,
in which case the process sends itself SIGKILL there: no handler, no `finally`, no atexit runs,
as when the machine or an operator kills it. The named points are where a kill leaves a different
state on disk (a folder just appeared, a save is half done, between two renames); the suite kills
`train` and `export` at each and checks that the next command recovers.
"""

from __future__ import annotations

import os
import signal

ENV = "TFRS_YOUTUBE_KILL_AT"


def point(name: str) -> None:
    """Kills this process with SIGKILL if `TFRS_YOUTUBE_KILL_AT` is `name`."""
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def enabled() -> bool:
    return bool(os.environ.get(ENV))
