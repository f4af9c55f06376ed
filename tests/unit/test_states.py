"""Every transition of core/states.py's table, without a VM: `require` refuses
each action in each status the table does not give it, with the exact
sentence; and the code that does each action (QMP, the VMM, the shim and the
agent stood in for) leaves the status the table says."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import pytest

import microbox
from microbox import locks
from microbox.core import control, lifecycle, reconcile, states, vm, warm
from microbox.core.boxdir import box_dir
from microbox.core.log import quiet
from microbox.core.states import KEPT, REMOVED, TRANSITIONS, Action
from microbox.errors import StateError, VMError
from microbox.spec import BoxSpec
from microbox.store import boxes
from microbox.store.boxes import BoxRecord
from microbox.store.db import Database
from microbox.store.status import AT_REST, HAS_VM, LIVE, STATUSES, Status
from microbox.vmm import qmp as qmp_module

S = Status

# -- the table ------------------------------------------------------------------------


def test_the_table_has_a_row_for_each_action_and_reaches_each_status() -> None:
    assert set(get_args(Action)) == set(TRANSITIONS)
    reached = {r.to for r in TRANSITIONS.values()} | {s for r in TRANSITIONS.values()
                                                     for s in r.acts_from}
    assert set(Status) <= reached
    for rule in TRANSITIONS.values():
        assert not set(rule.acts_from) & set(rule.idle)
        assert rule.to in (KEPT, REMOVED) or isinstance(rule.to, Status)


def test_the_groups() -> None:
    assert [str(s) for s in Status] == ["created", "starting", "running", "paused", "stopped",
                                        "error", "spare"]
    assert STATUSES == ("created", "starting", "running", "paused", "stopped", "error")
    assert all(type(s) is str for s in STATUSES)  # click's Choice reads an Enum's names
    assert LIVE == (S.RUNNING, S.PAUSED) and (*LIVE, S.SPARE) == HAS_VM
    assert json.dumps([S.RUNNING]) == '["running"]' and f"{S.ERROR}" == "error"
    assert S("spare") is S.SPARE


# -- refusals: every user action in every status --------------------------------------

OK = None
START = "box 'X' is not running; run 'microbox start X'."
RESUME = "box 'X' is paused; run 'microbox resume X'."
STILL = "box 'X' is still starting."
CRASH = "box 'X' is not running — boom; run 'microbox delete X' to clear it."
NOT_PAUSED = "box 'X' is running, not paused."
SPARE = "box 'X' is spare."
STOP_R = "box 'X' is running; run 'microbox stop X'."
STOP_P = "box 'X' is paused; run 'microbox stop X'."


def force(status: str) -> str:
    return f"box 'X' is {status}; run 'microbox delete -f X' to kill and delete it."


# status order: created, starting, running, paused, stopped, error, spare
EXPECTED: dict[Action, tuple[str | None, ...]] = {
    "start": (OK, STILL, STOP_R, STOP_P, OK, OK, SPARE),
    "stop": (OK, STILL, OK, OK, OK, CRASH, SPARE),
    "restart": (OK, STILL, OK, OK, OK, CRASH, SPARE),
    "pause": (START, STILL, OK, RESUME, START, CRASH, SPARE),
    "resume": (START, STILL, NOT_PAUSED, OK, START, CRASH, SPARE),
    "exec": (START, STILL, OK, RESUME, START, CRASH, SPARE),
    "cp": (OK, STILL, OK, RESUME, OK, CRASH, SPARE),
    "snapshot": (START, STILL, OK, OK, START, CRASH, SPARE),
    "fork": (START, STILL, OK, OK, START, CRASH, SPARE),
    "set": (OK, STILL, STOP_R, STOP_P, OK, CRASH, SPARE),
    "pack": (OK, STILL, STOP_R, STOP_P, OK, OK, SPARE),
    "delete": (OK, force("starting"), force("running"), force("paused"), OK, OK, OK),
}


def rec(status: Status, name: str = "X", **kw: Any) -> BoxRecord:
    return BoxRecord(id=hashlib.md5(name.encode()).hexdigest(), name=name, image="busybox",
                     spec=BoxSpec("busybox", net="none"), status=status, **kw)


def test_every_user_action_is_in_the_matrix() -> None:
    asked = {a for a, r in TRANSITIONS.items() if not r.internal and r.acts_from}
    assert asked == set(EXPECTED)


@pytest.mark.parametrize("action,status,text", [
    (a, s, row[i]) for a, row in EXPECTED.items() for i, s in enumerate(Status)])
def test_require(action: Action, status: Status, text: str | None) -> None:
    record = rec(status, last_error="boom" if status == S.ERROR else None)
    if text is None:
        reconcile.require(record, action)
        assert status in TRANSITIONS[action].accepts
        return
    with pytest.raises(StateError) as err:
        reconcile.require(record, action)
    assert str(err.value) == text
    assert err.value.exit_code == 1


def test_a_crash_without_a_recorded_error_names_the_crash() -> None:
    with pytest.raises(StateError, match="not running — its process has exited; run "
                       "'microbox delete X' to clear it"):
        reconcile.require(rec(S.ERROR), "exec")


# -- what the code does: the status each action leaves ---------------------------------


@pytest.fixture
def db(monkeypatch: pytest.MonkeyPatch) -> Iterator[Database]:
    home = Path(tempfile.mkdtemp(prefix="mbs-", dir="/tmp"))  # short: box dirs hold sockets
    monkeypatch.setenv("MICROBOX_HOME", str(home))
    d = Database(home / "microbox.db")
    yield d
    d.close()
    shutil.rmtree(home)


def put(db: Database, status: Status, name: str = "X", **kw: Any) -> BoxRecord:
    record = rec(status, name, **kw)
    box_dir(record).path.mkdir(parents=True)
    boxes.insert(db, record)
    return record


def stored(db: Database, record: BoxRecord) -> BoxRecord:
    row = boxes.get(db, record.id)
    assert row is not None, f"box {record.name} is gone"
    return row


def gone(db: Database, record: BoxRecord) -> bool:
    return boxes.get(db, record.id) is None and not box_dir(record).exists()


def starter() -> dict[str, Any]:
    """The pid columns naming this process as the box's starter."""
    return {k: v for k, v in lifecycle.starter().items() if k != "status"}


def to(action: Action) -> Status:
    target = TRANSITIONS[action].to
    assert isinstance(target, Status)
    return target


@pytest.fixture
def qmp(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    sent: list[str] = []
    monkeypatch.setattr(qmp_module, "command", lambda _s, _l, cmd, *a, **k: sent.append(cmd))
    return sent


def test_pause_and_resume(db: Database, qmp: list[str]) -> None:
    box = put(db, S.RUNNING)
    box = control.pause(db, box)
    assert box.status == to("pause") == S.PAUSED == stored(db, box).status
    with pytest.raises(StateError, match="is paused"):
        control.pause(db, box)
    box = control.resume(db, box)
    assert box.status == to("resume") == S.RUNNING == stored(db, box).status
    with pytest.raises(StateError, match="running, not paused"):
        control.resume(db, box)
    assert qmp == ["stop", "cont"]  # the refused ones sent nothing


def test_set_keeps_the_status(db: Database) -> None:
    for status in AT_REST:
        box = control.set_spec(db, put(db, status, f"s-{status}"), cpus=1, memory_mib=300)
        assert TRANSITIONS["set"].to == KEPT
        assert (stored(db, box).status, box.spec.memory_mib) == (status, 300)
    with pytest.raises(StateError, match="is running; run 'microbox stop"):
        control.set_spec(db, put(db, S.RUNNING, "r"), cpus=2)


def test_stop(db: Database, qmp: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    def no_agent(record: BoxRecord, timeout: float = 0) -> None:
        raise VMError("no agent here")

    monkeypatch.setattr(control, "connect", no_agent)  # lifecycle.stop goes to SIGTERM
    for status in TRANSITIONS["stop"].idle:  # nothing to do: kept as it is
        box = put(db, status, f"i-{status}")
        assert control.stop(db, box) is box and stored(db, box).status == status
    for status in TRANSITIONS["stop"].acts_from:  # no pid: nothing to signal
        box = control.stop(db, put(db, status, f"l-{status}", started_at=1.0))
        assert box.status == to("stop") == stored(db, box).status
        assert box.pid is None and box.finished_at is not None
    assert qmp == ["cont"]  # the paused one was resumed first
    with pytest.raises(StateError, match="not running — its process has exited"):
        control.stop(db, put(db, S.ERROR, "e"))


class _Channel:
    def close(self) -> None:
        pass


DEAD_PID = 4_000_000  # above pid_max's ceiling (2^22): no process has it


@pytest.fixture
def boots(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """lifecycle's VMM and shim stood in for: a boot succeeds, unless the
    test appends "fail"; each boot appends "boot"."""
    calls: list[str] = []

    def boot(record: BoxRecord, *a: Any, **k: Any) -> tuple[vm.Running, _Channel]:
        calls.append("boot")
        if "fail" in calls:
            raise VMError("QEMU exited at once")
        return vm.Running(DEAD_PID, 1.0, "tcg"), _Channel()

    monkeypatch.setattr(lifecycle, "_boot", boot)
    monkeypatch.setattr(lifecycle, "_hand_to_shim", lambda *a, **k: _Channel())
    monkeypatch.setattr(vm, "await_agent", lambda *a, **k: _Channel())
    monkeypatch.setattr(warm, "warm_up", lambda channel: None)
    return calls


def test_start(db: Database, boots: list[str]) -> None:
    for status in TRANSITIONS["start"].acts_from:
        box = control.start(db, put(db, status, f"b-{status}"), quiet)
        assert box.status == to("start") == stored(db, box).status
        assert box.pid == DEAD_PID and box.last_error is None
    with pytest.raises(StateError, match="is running; run 'microbox stop"):
        control.start(db, box, quiet)


def test_a_failed_start_leaves_the_box_as_it_was(db: Database, boots: list[str]) -> None:
    boots.append("fail")
    for status in TRANSITIONS["start"].acts_from:
        box = put(db, status, f"f-{status}")
        with pytest.raises(VMError):
            control.start(db, box, quiet)
        after = stored(db, box)
        assert after.status == status
        assert after.last_error == "QEMU exited at once." and after.pid is None


def test_create_and_its_failed_first_start(db: Database, boots: list[str]) -> None:
    spec = BoxSpec("busybox", net="none")
    box, lock = lifecycle.create(db, spec, name="c", start_next=True, image_digest="sha256-x")
    assert box.status == S.STARTING and box.pending  # `create --start`, `run`
    assert lifecycle.start(db, box, lock, attached=False).record.status == S.RUNNING
    boots.append("fail")
    box, lock = lifecycle.create(db, spec, name="d", start_next=True, image_digest="sha256-x")
    with pytest.raises(VMError):
        lifecycle.start(db, box, lock, attached=False)
    assert gone(db, box)  # removed


def test_create(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vm, "create_disk", lambda image, disk: disk.write_bytes(b""))
    box, lock = lifecycle.create(db, BoxSpec("busybox"), name="n", image_digest="sha256-x")
    lock.close()
    assert box.status == to("create") == stored(db, box).status
    assert TRANSITIONS["create"].acts_from == ()


def test_delete(db: Database) -> None:
    for status in TRANSITIONS["delete"].acts_from:
        box = put(db, status, f"d-{status}")
        control.delete(db, box)
        assert gone(db, box)
    assert TRANSITIONS["delete"].to == REMOVED
    for status in set(Status) - set(TRANSITIONS["delete"].acts_from):
        box = put(db, status, f"k-{status}")  # no VMM to kill: pid None, lock free
        with pytest.raises(StateError, match=f"is {status}; run 'microbox delete -f"):
            control.delete(db, box)
        assert stored(db, box) == box
        control.delete(db, box, force=True)
        assert gone(db, box)


def test_exec_needs_a_running_box(db: Database) -> None:
    with pytest.raises(StateError, match="is paused; run 'microbox resume"):
        control.connect(put(db, S.PAUSED))


def test_crash(db: Database) -> None:
    """Reconcile on a box whose VMM is gone (its lock is free)."""
    for status in TRANSITIONS["crash"].acts_from:
        kept = status != S.SPARE  # a spare is auto_remove, as --rm is
        box = put(db, status, f"c-{status}", pid=DEAD_PID, pid_start=1.0, auto_remove=not kept)
        after = reconcile.reconcile(db, box)
        if not kept:
            assert after is None and gone(db, box)
            continue
        assert after is not None and after.status == to("crash") == stored(db, box).status
        assert after.last_error == states.CRASHED and after.pid is None
    box = put(db, S.RUNNING, "rm", pid=DEAD_PID, pid_start=1.0, auto_remove=True)
    assert reconcile.reconcile(db, box) is None and gone(db, box)
    box = put(db, S.RUNNING, "job", pid=DEAD_PID, pid_start=1.0)  # `run -d CMD`: CMD ended
    box_dir(box).console_log.write_bytes(reconcile.MAIN_EXITED + b"0\n")
    after = reconcile.reconcile(db, box)
    assert after is not None and after.status == S.STOPPED == stored(db, box).status
    for status in set(Status) - set(HAS_VM) - {S.STARTING}:  # no VM to lose
        box = put(db, status, f"n-{status}")
        assert reconcile.reconcile(db, box) == box


def test_a_live_box_stays_as_it_is(db: Database) -> None:
    for status in HAS_VM:
        box = put(db, status, f"l-{status}", pid=DEAD_PID, pid_start=1.0)
        lock = locks.create_held(box_dir(box).lock)  # as its VMM holds it
        try:
            assert reconcile.reconcile(db, box) == box
        finally:
            lock.close()


def test_abandon(db: Database) -> None:
    """Reconcile on a starting box whose starter died."""
    box = put(db, S.STARTING, "a", pid=DEAD_PID, pid_start=1.0)
    after = reconcile.reconcile(db, box)
    assert after is not None and after.status == to("abandon") == stored(db, box).status
    assert after.last_error == "its start was interrupted"
    for kw in ({"pending": True}, {"auto_remove": True}):
        box = put(db, S.STARTING, f"p{len(kw)}{next(iter(kw))}", pid=DEAD_PID, pid_start=1.0,
                  **kw)
        assert reconcile.reconcile(db, box) is None and gone(db, box)
    mine = put(db, S.STARTING, "mine", **starter())  # its starter: this process
    assert reconcile.reconcile(db, mine) == mine


def test_fill_then_take(db: Database, boots: list[str]) -> None:
    """A pool's spare: made as a pending create, booted into `spare`; a run takes
    it (`starting`, its new name), then the agent and shim make it `running`."""
    spare = put(db, S.STARTING, "spare-1", pending=True, auto_remove=True, pool="p",
                spare_key="k", **starter())
    lock = box_dir(spare).take_lock()
    assert lock is not None
    spare = lifecycle.start_spare(db, spare, lock, log=quiet)
    assert spare.status == to("fill") == stored(db, spare).status
    assert not spare.pending
    claimed = spare.with_(name="taken", pool=None, spare_key=None, pending=True,
                          auto_remove=False, **lifecycle.starter())
    assert boxes.take_spare(db, spare, claimed)
    assert stored(db, spare).status == S.STARTING
    assert not boxes.take_spare(db, spare, claimed.with_(name="again"))  # taken already
    vmm = vm.Running(DEAD_PID, 1.0, "tcg")
    box = lifecycle.adopt(db, claimed, vmm, [], attached=False, log=quiet).record
    assert box.status == to("take") == stored(db, box).status and box.name == "taken"
    for status in set(Status) - {S.SPARE}:  # only a spare is taken
        other = put(db, status, f"t-{status}")
        assert not boxes.take_spare(db, other, other.with_(name=f"u-{status}"))
        assert stored(db, other) == other


# -- through the SDK: the actions box.py checks itself ---------------------------------


def test_sdk_refusals(db: Database) -> None:
    put(db, S.STOPPED, "off", image_digest="sha256-x")
    with microbox.Runtime() as rt:
        box = rt.boxes.get("off")
        with pytest.raises(StateError) as err:
            box.snapshot()
        assert str(err.value) == "box 'off' is not running; run 'microbox start off'."
        with pytest.raises(StateError) as err:
            box.fork(1)  # was: "stopped running while it was being saved ... delete off"
        assert str(err.value) == "box 'off' is not running; run 'microbox start off'."
