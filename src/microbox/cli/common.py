"""Options and error handling shared by every command."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from microbox import mounts as box_mounts
from microbox import portmap
from microbox.cli.output import Out
from microbox.errors import HostError, MicroboxError
from microbox.net import cacerts, plan
from microbox.spec import (
    ACCELS,
    DEFAULT_MEMORY_MIB,
    BoxSpec,
    parse_env,
    parse_labels,
)

F = TypeVar("F", bound=Callable[..., Any])


def common_options(f: F) -> F:
    f = click.option("--json", "as_json", is_flag=True, help="Print one JSON envelope.")(f)
    f = click.option("-v", "--verbose", is_flag=True, help="Explain what happens, on stderr.")(f)
    return f


def box_common_options(f: F) -> F:
    """common_options of `run` and `create`, where -v is --volume, as in Docker."""
    f = click.option("--json", "as_json", is_flag=True, help="Print one JSON envelope.")(f)
    f = click.option("--verbose", is_flag=True, help="Explain what happens, on stderr.")(f)
    return f


def spec_options(f: F) -> F:
    """The flags that describe a box, shared by `run` and `create`."""
    for opt in reversed([
        click.option("--name", help="Name of the box (also its hostname)."),
        click.option("--cpus", type=int, default=1, show_default=True, help="Virtual CPUs."),
        click.option("--memory", type=int, default=DEFAULT_MEMORY_MIB, show_default=True,
                     help="Memory in MiB."),
        click.option("-e", "--env", multiple=True, metavar="KEY=VALUE",
                     help="Environment variable (-e KEY copies it from here)."),
        click.option("-w", "--workdir", help="Working directory inside the box."),
        click.option("-u", "--user", help="User name or uid[:gid] inside the box."),
        click.option("-l", "--label", "labels", multiple=True, metavar="KEY=VALUE",
                     help="A label to find the box by (list --filter label=KEY=VALUE)."),
        click.option("--accel", type=click.Choice(ACCELS), default="auto", show_default=True,
                     help="auto uses KVM only where a probe showed it runs a guest."),
        click.option("--kernel", type=click.Path(dir_okay=False), help="Boot this vmlinux."),
        click.option("--cold", is_flag=True, help="Boot the kernel instead of restoring the "
                     "image's warm-start template."),
        click.option("-p", "--publish", multiple=True, metavar="[HOST_IP:]HOST:GUEST",
                     help="Forward a host TCP port (bound on 127.0.0.1 unless HOST_IP is "
                          "given) to a port inside the box, for as long as the box runs."),
        click.option("-v", "--volume", "volumes", multiple=True,
                     metavar="HOST_DIR|VOLUME:GUEST_DIR[:ro]",
                     help="Mount a host folder (an absolute path) or a named volume in the "
                          "box; :ro makes it read-only (repeatable; docs/mounts.md)."),
        *net_options(),
        *ca_options(),
    ]):
        f = opt(f)
    return f


def ca_options() -> list[Callable[[F], F]]:
    """The trusted-CA flags of run/create (docs/net.md, "Trusted CAs"); not MCP's."""
    return [
        click.option("--ca-cert", "ca_cert", multiple=True, metavar="FILE",
                     help="Trust the CA certificates of this PEM file in the box, besides "
                          "the image's (repeatable)."),
        click.option("--trust-host-ca", "trust_host_ca", is_flag=True,
                     envvar=cacerts.TRUST_ENV, help="Trust the host's own CA bundle in the "
                     f"box too (default: ${cacerts.TRUST_ENV}=1)."),
    ]


def shape_options(f: F) -> F:
    """The flags that shape a box's VM (its template's key, not its use), of
    `image warm` and `pool add`."""
    for opt in reversed([
        click.option("--cpus", type=int, default=1, show_default=True, help="Virtual CPUs."),
        click.option("--memory", type=int, default=DEFAULT_MEMORY_MIB, show_default=True,
                     help="Memory in MiB."),
        click.option("--accel", type=click.Choice(ACCELS), default="auto", show_default=True),
        click.option("--net", "net", type=click.Choice(plan.MODES), default=plan.DEFAULT_MODE,
                     show_default=True, help="The network mode of the boxes (part of the "
                     "template)."),
    ]):
        f = opt(f)
    return f


def net_options(*, for_set: bool = False) -> list[Callable[[F], F]]:
    """The networking flags (docs/net.md), of run/create, and of set (where the
    list flags replace the box's and the switches can be turned off)."""
    lists = " (repeatable; replaces the box's list)" if for_set else " (repeatable)"
    return [
        click.option("--net", "net", metavar="user|none|tap",
                     default=None if for_set else plan.DEFAULT_MODE,
                     show_default=not for_set,
                     help="user: reach the network through the box's filtering proxy; "
                          "none: no network device; tap (root): a routed TAP in the box's "
                          "own network namespace, filtered by nftables."),
        click.option("--allow-host", "allow_host", multiple=True, metavar="NAME",
                     help="Allow this host name (*.example.org: the names below it); "
                          "names not allowed are then refused" + lists + "."),
        click.option("--allow-cidr", "allow_cidr", multiple=True, metavar="CIDR",
                     help="Allow this address or range, over every default block" + lists
                     + "."),
        click.option("--deny-all/--no-deny-all" if for_set else "--deny-all", "deny_all",
                     is_flag=True, default=None if for_set else False,
                     help="Refuse everything not allowed by --allow-host or --allow-cidr."),
        click.option("--allow-private/--no-allow-private" if for_set else "--allow-private",
                     "allow_private", is_flag=True, default=None if for_set else False,
                     help="Allow loopback, the host's addresses and private ranges (never "
                          "169.254.169.254 unless --allow-cidr names it)."),
        click.option("--add-host", "add_host", multiple=True, metavar="NAME:ADDRESS",
                     help="Resolve NAME to ADDRESS in the box's proxy (the address is still "
                          "checked by the policy)" + lists + "."),
    ]


def spec_from(image: str, cpus: int, memory: int, env: tuple[str, ...], workdir: str | None,
              user: str | None, labels: tuple[str, ...], accel: str,
              kernel: str | None, cold: bool, publish: tuple[str, ...] = (),
              net: str = plan.DEFAULT_MODE, allow_host: tuple[str, ...] = (),
              allow_cidr: tuple[str, ...] = (), deny_all: bool = False,
              allow_private: bool = False, add_host: tuple[str, ...] = (),
              volumes: tuple[str, ...] = (), ca_cert: tuple[str, ...] = (),
              trust_host_ca: bool = False) -> BoxSpec:
    return BoxSpec(image=image, cpus=cpus, memory_mib=memory, env=parse_env(env),
                   workdir=workdir, user=user, accel=accel, kernel=kernel,
                   labels=parse_labels(labels), cold=cold, ports=portmap.parse_all(publish),
                   net=net, allow_hosts=allow_host, allow_cidrs=allow_cidr, deny_all=deny_all,
                   allow_private=allow_private, add_hosts=add_host,
                   mounts=box_mounts.parse_all(volumes), ca_certs=ca_cert,
                   trust_host_ca=trust_host_ca)


# Each flag of spec_options and the BoxSpec field it sets.
_SPEC_FIELDS = {"cpus": "cpus", "memory": "memory_mib", "env": "env", "workdir": "workdir",
                "user": "user", "labels": "labels", "accel": "accel", "kernel": "kernel",
                "cold": "cold", "publish": "ports", "net": "net", "allow_host": "allow_hosts",
                "allow_cidr": "allow_cidrs", "deny_all": "deny_all",
                "allow_private": "allow_private", "add_host": "add_hosts",
                "volumes": "mounts", "ca_cert": "ca_certs", "trust_host_ca": "trust_host_ca"}


def from_option(f: F) -> F:
    return click.option("--from", "from_pack", metavar="FILE", type=click.Path(dir_okay=False),
                        help="Make the box of a pack (microbox pack create) instead of an "
                             "IMAGE: its disk, config and spec; flags given here override "
                             "the spec (-e and -l add to it).")(f)


def given_spec(spec: BoxSpec) -> dict[str, Any]:
    """The fields of `spec` whose flags were given on this command line (over a pack's)."""
    ctx = click.get_current_context()
    given = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    return {field: getattr(spec, field) for param, field in _SPEC_FIELDS.items()
            if ctx.get_parameter_source(param) in given}


def guarded(out: Out, body: Callable[[], int | None]) -> None:
    """Run a command body; a MicroboxError becomes its message and exit code."""
    try:
        code = body()
    except MicroboxError as err:
        sys.exit(out.fail(err))
    except OSError as err:  # the host said no (disk full, permissions...): one line, not a trace
        sys.exit(out.fail(HostError(f"{err.strerror or err}"
                                    + (f": {err.filename}" if err.filename else ""))))
    sys.exit(code or 0)


def takes_value(cmd: click.Command, token: str) -> bool:
    """Whether `token`, one of cmd's options, takes the next word as its value."""
    for p in cmd.params:
        if isinstance(p, click.Option) and token in (*p.opts, *p.secondary_opts):
            return not p.is_flag and not p.count
    return False  # --opt=value, -eVALUE, flags


def refuse_options_after(ctx: click.Context, command: tuple[str, ...], word: str,
                         what: str) -> None:
    """COMMAND comes after BOX or IMAGE (`word`), where, as in Docker, every
    word is the command's: one that begins with this command's own options
    (`exec dev -w /src -- make`) was surely meant otherwise, so it is refused
    with the command line that was meant."""
    n = 0
    while n < len(command) and _own_option(ctx.command, command[n]):
        n += 2 if takes_value(ctx.command, command[n]) else 1
    if n == 0:
        return
    rest = command[n:][1:] if command[n:n + 1] == ("--",) else command[n:]
    meant = ["microbox", str(ctx.info_name), *command[:n], word, "--", *rest]
    raise click.UsageError(f"{command[0]} after {what} would be the command; options go "
                           f"before it: {shlex.join(meant)}")


def _own_option(cmd: click.Command, token: str) -> bool:
    """`token` is one of cmd's options: its name, `--name=value`, a value glued
    to a short option (`-eK=V`) or short flags run together (`-it`)."""
    if not token.startswith("-") or token in ("-", "--"):
        return False
    names = {o for p in cmd.params if isinstance(p, click.Option)
             for o in (*p.opts, *p.secondary_opts)}
    if token.split("=", 1)[0] in names:
        return True
    if token.startswith("--"):
        return False
    if token[:2] in names and takes_value(cmd, token[:2]):
        return True  # -eKEY=VALUE
    return all(f"-{c}" in names and not takes_value(cmd, f"-{c}") for c in token[1:])
