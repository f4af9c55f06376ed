"""`microbox mcp`: serve the MCP tools over stdio (the server lives in microbox.mcpserver)."""

from __future__ import annotations

import sys
from typing import Any

import click

from microbox.cli.common import net_options
from microbox.errors import MicroboxError
from microbox.spec import BoxSpec


def _with_net(f: Any) -> Any:
    for opt in reversed(net_options()):
        f = opt(f)
    return f


@click.command()
@click.option("--keep", is_flag=True,
              help="Leave the boxes this server created running when it exits.")
@_with_net
def mcp(keep: bool, net: str, allow_host: tuple[str, ...], allow_cidr: tuple[str, ...],
        deny_all: bool, allow_private: bool, add_host: tuple[str, ...]) -> None:
    """Serve boxes to a language model over MCP (stdio).

    Tools: create_box, exec, read_file, write_file, list_dir, delete_box,
    list_boxes, fork_box. The model can act only on boxes this server created;
    they are deleted when the server exits (stdin closed, SIGTERM, SIGINT)
    unless --keep. Every box gets the network and egress policy given here
    (docs/net.md): the model cannot widen it. Add to an MCP client as
    {"command": "microbox", "args": ["mcp"]}.
    """
    egress: dict[str, Any] = {"net": net, "allow_hosts": allow_host, "allow_cidrs": allow_cidr,
                              "deny_all": deny_all, "allow_private": allow_private,
                              "add_hosts": add_host}
    try:  # a bad policy fails here, in one sentence, before any client connects
        BoxSpec(image="busybox", **egress).validate()
    except MicroboxError as err:
        click.echo(f"microbox: {err}", err=True)
        sys.exit(err.exit_code)
    from microbox.mcpserver import serve  # imports the mcp SDK: only for this command

    sys.exit(serve(keep=keep, egress=egress))
