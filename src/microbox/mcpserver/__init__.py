"""`microbox mcp`: an MCP server (stdio) that lets a language model create boxes,
run commands in them and move files in and out. A thin layer over the SDK
(docs/mcp.md): sandbox.py owns scope and box lifetime, tools.py the tools,
stdio.py the transport and shutdown.

sandbox.py  The boxes of one MCP server
tools.py    The tools a model sees
"""

from __future__ import annotations

from typing import Any

from microbox.mcpserver.sandbox import LABEL, MAX_BOXES, Sandbox

__all__ = ["LABEL", "MAX_BOXES", "Sandbox", "serve"]


def serve(*, keep: bool = False, egress: dict[str, Any] | None = None) -> int:
    """Serve MCP on stdin/stdout until stdin closes or a signal comes; then delete
    the boxes made here (unless keep). Every box gets the network settings in
    `egress` (BoxSpec's net fields). Returns the exit code."""
    from microbox.mcpserver import stdio, tools

    sandbox = Sandbox(keep=keep, egress=egress)
    return stdio.run(tools.build(sandbox), sandbox)
