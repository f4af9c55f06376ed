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


@pytest.mark.parametrize("args,meant", [
    (["exec", "dev", "-w", "/src", "--", "make", "-j2"], "microbox exec -w /src dev -- make -j2"),
    (["exec", "dev", "-it", "sh"], "microbox exec -it dev -- sh"),
    (["exec", "dev", "-eK=V", "--timeout=3", "env"], "microbox exec -eK=V --timeout=3 dev -- env"),
    (["run", "busybox", "-p", "8080:80", "-d", "--", "httpd", "-f"],
     "microbox run -p 8080:80 -d busybox -- httpd -f"),
])
def test_options_after_the_box_or_image_are_refused_with_the_line_meant(
        tmp_path: Path, args: list[str], meant: str) -> None:
    """As in Docker, words after BOX or IMAGE are the command's; ones that
    begin with the command's own options were meant as options (no VM)."""
    done = mb(tmp_path, *args)
    assert done.returncode == 2
    assert done.stderr.decode().splitlines()[-1] == (
        f"Error: {args[2]} after {'BOX' if args[0] == 'exec' else 'IMAGE'} would be the "
        f"command; options go before it: {meant}")
    assert not (tmp_path / "boxes").exists()  # refused before anything was made


@pytest.mark.parametrize("args", [["exec", "dev", "--", "-w"], ["exec", "dev", "ls", "-w", "1"],
                                  ["run", "--from", "nosuch.pack", "ls", "-la"]])
def test_option_like_words_of_the_command_itself_are_left_alone(tmp_path: Path,
                                                                args: list[str]) -> None:
    done = mb(tmp_path, *args)
    assert b"would be the command" not in done.stderr
