"""Spec validation and state errors: bad input fails before anything is made,
with one sentence that names the fix."""

from __future__ import annotations

import pytest

from microbox.core.reconcile import require
from microbox.core.states import Action
from microbox.errors import InvalidSpec, StateError
from microbox.spec import BoxSpec, parse_env, validate_name
from microbox.store.boxes import BoxRecord
from microbox.store.status import Status


@pytest.mark.parametrize("kw,msg", [
    ({"cpus": 0}, "--cpus"), ({"memory_mib": 1}, "--memory"), ({"accel": "xen"}, "--accel"),
    ({"workdir": "rel"}, "--workdir"), ({"env": {"A=B": "c"}}, "environment"),
    ({"kernel": "/nonexistent/vmlinux"}, "--kernel"),
])
def test_invalid_specs(kw: dict[str, object], msg: str) -> None:
    with pytest.raises(InvalidSpec, match=msg) as err:
        BoxSpec(image="busybox", **kw).validate()  # type: ignore[arg-type]
    assert err.value.exit_code == 2


@pytest.mark.parametrize("name", ["", "-x", ".hidden", "../up", "a/b", "a b", "é", "x" * 64,
                                  "tab\there", "nul\0"])
def test_bad_names(name: str) -> None:
    with pytest.raises(InvalidSpec, match="bad box name") as err:
        validate_name(name)
    assert err.value.exit_code == 2


@pytest.mark.parametrize("name", ["a", "web-1", "my_box.v2", "0", "x" * 63])
def test_good_names(name: str) -> None:
    assert validate_name(name) == name


def test_parse_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FROM_HOST", "h")
    assert parse_env(["A=1", "B=x=y", "FROM_HOST", "UNSET_THING"]) == {
        "A": "1", "B": "x=y", "FROM_HOST": "h"}


def box(status: Status, **kw: object) -> BoxRecord:
    return BoxRecord(id="a" * 32, name="X", image="busybox", spec=BoxSpec("busybox"), status=status,
                     **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("status,action,text", [
    (Status.ERROR, "exec",
     "box 'X' is not running — its process has exited; run 'microbox delete X' to clear it."),
    (Status.STOPPED, "resume", "box 'X' is not running; run 'microbox start X'."),
    (Status.STOPPED, "exec", "box 'X' is not running; run 'microbox start X'."),
    (Status.PAUSED, "exec", "box 'X' is paused; run 'microbox resume X'."),
    (Status.RUNNING, "set", "box 'X' is running; run 'microbox stop X'."),
])
def test_state_errors_name_the_recovery(status: Status, action: Action, text: str) -> None:
    with pytest.raises(StateError) as err:
        require(box(status, last_error="its process has exited" if status == Status.ERROR
                    else None), action)
    assert str(err.value) == text
    assert err.value.exit_code == 1
