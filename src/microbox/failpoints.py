"""Named points where a test can have this process die, deterministically.

`MICROBOX_FAILPOINT=NAME` makes the process SIGKILL itself when it reaches
`reach("NAME")`: the same death a user's `kill -9` or an OOM killer
gives at a random moment, placed at the one moment a test wants (the box's
vCPUs stopped for a snapshot, half a file copied out, clones made but not yet
committed). `NAME:stop` has it SIGSTOP itself there instead, so that a test can
break something else at that moment (kill the VMM) and then SIGCONT it. Unset,
`reach` is one dictionary lookup. bench/faults.py kills at random moments
instead, to find the points nobody named.
"""

from __future__ import annotations

import os
import signal

ENV = "MICROBOX_FAILPOINT"


def reach(name: str) -> None:
    """Die here (SIGKILL, no cleanup of any kind), or stop here (`:stop`), if the
    environment names this point."""
    wanted = os.environ.get(ENV)
    if wanted == name:
        os.kill(os.getpid(), signal.SIGKILL)
    elif wanted == f"{name}:stop":
        os.kill(os.getpid(), signal.SIGSTOP)
