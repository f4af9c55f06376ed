"""What each action on a box accepts and leaves: the one table of a box's
transitions, read by `require` (core/reconcile.py) before an action and by
docs/boxes.md (scripts/states_doc.py writes its table from this one).

An action the user asks for is refused, unless the box's status is one it
`acts_from` (or one where it has nothing to do, `idle`), with the sentence
`refusal` makes: what the box is and the command that gets it where the
action can act. The `internal` rows are done by microbox itself (reconcile,
which every command runs first, and the pool); the code that does them is
named in their notes.
"""

from __future__ import annotations

from typing import Literal

from microbox.errors import StateError
from microbox.store.status import AT_REST, DOWN, HAS_VM, LIVE, Status

CRASHED = "its process has exited"  # a crashed box's last_error

# The actions, so that mypy checks each `require(record, "...")`.
Action = Literal["create", "start", "stop", "restart", "pause", "resume", "exec", "cp",
                 "snapshot", "fork", "set", "pack", "delete", "fill", "take", "crash", "abandon"]

KEPT: Literal["kept"] = "kept"  # the action leaves the box's status as it was
REMOVED: Literal["removed"] = "removed"  # the action removes the box (row, dir, disk)


class Rule:
    """One action's row. A plain class, not a dataclass: this module is on
    `microbox exec`'s path, where creating a dataclass costs ~1 ms of import."""

    __slots__ = ("accepts", "acts_from", "force", "idle", "internal", "note", "to")

    def __init__(self, acts_from: tuple[Status, ...], to: Status | Literal["kept", "removed"],
                 *, idle: tuple[Status, ...] = (), force: bool = False,
                 internal: bool = False, note: str = "") -> None:
        self.acts_from = acts_from  # none: the action makes a new box
        self.to = to
        self.idle = idle  # accepted, with nothing to do (the status is kept)
        self.force = force  # with -f it acts from any status (refused, it names -f)
        self.internal = internal  # done by microbox itself, never refused to a user
        self.note = note
        self.accepts = (*acts_from, *idle)


R, P = Status.RUNNING, Status.PAUSED

TRANSITIONS: dict[Action, Rule] = {
    "create": Rule((), Status.CREATED, note="`create --start` and `run`: `starting` (a pending "
                   "create), then `running`; a failed first start removes the box"),
    "start": Rule(DOWN, R, note="`starting` while it boots; a failed start puts the box back "
                  "where it was (`created`, `stopped`, `error`), the error in `last_error`"),
    "stop": Rule(LIVE, Status.STOPPED, idle=AT_REST, note="a paused box is resumed first"),
    "restart": Rule((*AT_REST, *LIVE), R, note="stop, then start"),
    "pause": Rule((R,), P),
    "resume": Rule((P,), R),
    "exec": Rule((R,), KEPT, note="and every other session with its agent: `shell`, "
                 "`connect`, `workspace`, `cp`"),
    "cp": Rule((*AT_REST, R), KEPT, note="a created or stopped box is started for the copy "
               "and stopped again (a created one is `stopped` after)"),
    "snapshot": Rule(LIVE, KEPT, note="its vCPUs stop for the save, then run on"),
    "fork": Rule(LIVE, KEPT, note="a snapshot, then its clones: new boxes, `starting` until "
                 "every one runs, then `running` (all or none)"),
    "set": Rule(AT_REST, KEPT, note="applied at its next start"),
    "pack": Rule(DOWN, KEPT, note="a running or paused box only with `pack create --stop`, "
                 "which stops it first"),
    "delete": Rule((*DOWN, Status.SPARE), REMOVED, force=True,
                   note="`-f` from any status: its VMM is killed first"),
    "fill": Rule((), Status.SPARE, internal=True, note="a pool's filler (core/pool.py): "
                 "`starting` (a pending create, removed if it fails), then `spare`"),
    "take": Rule((Status.SPARE,), R, internal=True, note="a `run` of a pool's shape "
                 "(core/pool.py): `starting` while the box takes its name and identity; removed "
                 "if that fails. A filler retiring a spare takes it the same way, then removes "
                 "it"),
    "crash": Rule(HAS_VM, Status.ERROR, internal=True, note="reconcile, when the box's VMM is "
                  "gone: `stopped` instead if its main process ended it (`run -d CMD`); "
                  "removed if `--rm` (a spare is)"),
    "abandon": Rule((Status.STARTING,), Status.STOPPED, internal=True, note="reconcile, when "
                    "the command starting the box died: removed if a pending create or `--rm`"),
}


def refusal(name: str, status: Status, action: Action,
            last_error: str | None = None) -> StateError:
    """Why the box `name`, being `status`, refuses `action`, and the way on."""
    rule = TRANSITIONS[action]
    if rule.force:
        return StateError(f"box '{name}' is {status}", f"microbox {action} -f {name}",
                          f"to kill and {action} it")
    accepts = rule.accepts
    needs_live = any(s in LIVE for s in accepts)
    if status == Status.ERROR:
        return StateError(f"box '{name}' is not running — {last_error or CRASHED}",
                          f"microbox delete {name}", "to clear it")
    if status in AT_REST and needs_live:
        return StateError(f"box '{name}' is not running", f"microbox start {name}")
    if status == P and R in accepts:
        return StateError(f"box '{name}' is paused", f"microbox resume {name}")
    if status == R and P in accepts:
        return StateError(f"box '{name}' is running, not paused")
    if status in LIVE:
        return StateError(f"box '{name}' is {status}", f"microbox stop {name}")
    if status == Status.STARTING:
        return StateError(f"box '{name}' is still starting")
    return StateError(f"box '{name}' is {status}")
