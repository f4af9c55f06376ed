"""A box's status: the seven values its row's `status` column holds, and the
groups the code tests them by. What each action accepts and leaves is the
table in core/states.py.

The members are strings (StrEnum), so the database, JSON output, the API and
the CLI see the same words as before: `Status.RUNNING == "running"`.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    CREATED = "created"  # made, never started (or a start of it failed)
    STARTING = "starting"  # a command is booting it; the pid columns name that command
    RUNNING = "running"
    PAUSED = "paused"  # its vCPUs frozen (QMP stop)
    STOPPED = "stopped"
    ERROR = "error"  # its VMM died without being stopped
    SPARE = "spare"  # a pool's box, its VM ready for a `run` to take (core/pool.py)


LIVE = (Status.RUNNING, Status.PAUSED)  # a VM exists, and the box is the user's
HAS_VM = (*LIVE, Status.SPARE)  # a VMM holds the box lock; a spare is auto_remove, as --rm is
AT_REST = (Status.CREATED, Status.STOPPED)  # no VM, and none lost: `set` may change it
DOWN = (*AT_REST, Status.ERROR)  # no VM: a start boots it from its own disk
LISTED = (*LIVE, Status.ERROR)  # what `ls` shows without -a or --status
# The words a user may ask `ls --status` (and the API's ?status=) for: all but
# a pool's spares, which `pool ls` counts. Plain strings: click's Choice takes
# an Enum's member *names* (RUNNING), not its values.
STATUSES: tuple[str, ...] = tuple(s.value for s in Status if s is not Status.SPARE)
