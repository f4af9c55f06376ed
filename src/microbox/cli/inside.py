"""Working inside a running box: shell (ssh), port, connect, ssh-config."""

from __future__ import annotations

import os
import shlex
import sys
import threading

import click

from microbox.cli.attach import Interrupted, complete, terminal_size
from microbox.cli.common import common_options, guarded
from microbox.cli.output import Out
from microbox.connection import Connection
from microbox.errors import NotFound
from microbox.sdk import Runtime


@click.command()
@click.option("-u", "--user", help="User name or uid[:gid] (default: the box's user).")
@common_options
@click.argument("box")
def shell(user: str | None, as_json: bool, verbose: bool, box: str) -> None:
    """An interactive login shell in BOX: the user's shell from the image's
    /etc/passwd (else /bin/sh), on a terminal when this one is; exits with
    the shell's status."""
    out = Out("shell", as_json, verbose)
    if as_json:
        raise click.UsageError("shell is interactive: --json does not apply")
    use_tty = os.isatty(0)

    def body() -> int:
        with Runtime() as rt:
            handle = rt.boxes.get(box)
            try:
                rows, cols = terminal_size()
                ex = handle.shell(user=user, tty=use_tty, rows=rows, cols=cols)
                try:
                    return complete(out, ex, stdin=True, use_tty=use_tty, timeout=None)
                except Interrupted as sig:
                    return 128 + sig.signum
            finally:
                handle.close()

    guarded(out, body)


@click.command()
@common_options
@click.argument("box")
@click.argument("guest_port", required=False, type=int)
def port(as_json: bool, verbose: bool, box: str, guest_port: int | None) -> None:
    """List BOX's published ports (Docker's format), or the host address of GUEST_PORT."""
    out = Out("port", as_json, verbose)

    def body() -> int:
        with Runtime() as rt:
            maps = [m for m in rt.boxes.get(box).ports
                    if guest_port is None or m.guest_port == guest_port]
        if guest_port is not None and not maps:
            raise NotFound(f"box '{box}' publishes no port {guest_port}")
        if guest_port is None:
            human = "\n".join(str(m) for m in maps)
        else:
            human = "\n".join(str(m).split(" -> ", 1)[1] for m in maps)
        out.result([m.to_json() for m in maps], human or None)
        return 0

    guarded(out, body)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to connect to, as seen from inside the box.")
@common_options
@click.argument("box")
@click.argument("guest_port", type=click.IntRange(1, 65535))
def connect(host: str, as_json: bool, verbose: bool, box: str, guest_port: int) -> None:
    """Pipe stdin and stdout to TCP GUEST_PORT inside BOX (over the agent: no
    network needed), e.g. as an OpenSSH ProxyCommand (see ssh-config)."""
    out = Out("connect", as_json, verbose)

    def body() -> int:
        with Runtime() as rt:
            handle = rt.boxes.get(box)
            try:
                conn = handle.connect(guest_port, host=host)
                pump = threading.Thread(target=_pump_in, args=(conn,), daemon=True)
                pump.start()
                out_fd = sys.stdout.fileno()
                for data in conn.receive():
                    view = memoryview(data)
                    while view:
                        view = view[os.write(out_fd, view):]
                return 0
            finally:
                handle.close()

    guarded(out, body)


def _pump_in(conn: Connection) -> None:
    try:
        while data := os.read(0, 65536):
            conn.send(data)
        conn.close_write()
    except OSError:
        conn.close_write()


@click.command(name="ssh-config")
@click.option("--user", "ssh_user", default="root", show_default=True,
              help="The login name the block gives ssh.")
@common_options
@click.argument("boxes", nargs=-1)
def ssh_config(ssh_user: str, as_json: bool, verbose: bool, boxes: tuple[str, ...]) -> None:
    """Print an OpenSSH `Host` block per box (every running one unless BOXES are
    named) that reaches its sshd through microbox: ssh, scp, rsync and editors'
    remote modes then work with `ssh BOX`. Add it to ~/.ssh/config."""
    out = Out("ssh-config", as_json, verbose)

    def body() -> int:
        with Runtime() as rt:
            handles = [rt.boxes.get(b) for b in boxes] if boxes else rt.boxes.list()
            names = [h.name for h in handles]
        exe = shlex.quote(sys.argv[0]) if os.path.isabs(sys.argv[0]) else "microbox"
        blocks = [
            f"Host {name}\n"
            f"    HostName {name}\n"
            f"    User {ssh_user}\n"
            f"    ProxyCommand {exe} connect {name} 22\n"
            "    StrictHostKeyChecking no\n"
            "    UserKnownHostsFile /dev/null\n"
            "    LogLevel ERROR\n"
            for name in names]
        out.result({"hosts": names, "config": "\n".join(blocks)}, "\n".join(blocks).rstrip())
        return 0

    guarded(out, body)
