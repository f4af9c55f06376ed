"""`microbox mcp`: an MCP server (stdio) that lets a language model create boxes,
run commands in them and move files in and out. A thin layer over the SDK
(docs/mcp.md): sandbox.py owns scope and box lifetime, tools.py the tools,
stdio.py the transport and shutdown.
"""

from __future__ import annotations

from microbox.mcpserver.sandbox import LABEL, MAX_BOXES, Sandbox

__all__ = ["LABEL", "MAX_BOXES", "Sandbox", "serve"]


def serve(*, keep: bool = False) -> int:
    """Serve MCP on stdin/stdout until stdin closes or a signal comes; then delete
    the boxes made here (unless keep). Returns the exit code."""
    from microbox.mcpserver import stdio, tools

    sandbox = Sandbox(keep=keep)
    return stdio.run(tools.build(sandbox), sandbox)
