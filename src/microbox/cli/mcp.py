"""`microbox mcp`: serve the MCP tools over stdio (the server lives in microbox.mcpserver)."""

from __future__ import annotations

import sys

import click


@click.command()
@click.option("--keep", is_flag=True,
              help="Leave the boxes this server created running when it exits.")
def mcp(keep: bool) -> None:
    """Serve boxes to a language model over MCP (stdio).

    Tools: create_box, exec, read_file, write_file, list_dir, delete_box,
    list_boxes. The model can act only on boxes this server created; they are
    deleted when the server exits (stdin closed, SIGTERM, SIGINT) unless
    --keep. Add to an MCP client as {"command": "microbox", "args": ["mcp"]}.
    """
    from microbox.mcpserver import serve  # imports the mcp SDK: only for this command

    sys.exit(serve(keep=keep))
