"""Docker's verbs are the same commands under Docker's names (no VM needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest


def mb(home: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "MICROBOX_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "microbox", *args], capture_output=True,
                          env=env, timeout=60)


@pytest.mark.parametrize("alias,original", [("ps", "list"), ("rm", "delete"),
                                            ("images", "image list")])
def test_alias_has_the_same_flags(tmp_path: Path, alias: str, original: str) -> None:
    a = mb(tmp_path, alias, "--help").stdout.split(b"Options:")[1]
    b = mb(tmp_path, *original.split(), "--help").stdout.split(b"Options:")[1]
    assert a == b


def test_aliases_answer_like_the_originals(tmp_path: Path) -> None:
    ps = json.loads(mb(tmp_path, "ps", "-a", "--json").stdout)
    assert (ps["ok"], ps["data"]) == (True, [])
    images = json.loads(mb(tmp_path, "images", "--json").stdout)
    assert images["ok"] is True and isinstance(images["data"], list)
    rm = mb(tmp_path, "rm", "nosuchbox")
    assert rm.returncode == 1
    assert rm.stderr == (b"microbox: no box named or with id 'nosuchbox'; "
                         b"run 'microbox list --all'.\n")


def test_every_command_resolves_and_loads_only_when_asked() -> None:
    """The CLI imports a command's module when the command runs: every name in
    its table must resolve, and starting it must not import the SDK."""
    from microbox.cli.main import COMMANDS, cli
    ctx = click.Context(cli)
    for name in COMMANDS:
        command = cli.get_command(ctx, name)
        assert isinstance(command, click.Command), name
        assert name in (command.name, "ls", "ps", "rm", "ssh", "images", "pull"), name
    probe = subprocess.run([sys.executable, "-c", "import sys, microbox.cli.main; "
                            "print('microbox.sdk' in sys.modules)"], capture_output=True)
    assert probe.stdout == b"False\n", probe.stderr
