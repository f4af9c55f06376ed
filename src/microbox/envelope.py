"""The one result envelope of every front end: the CLI's --json, the HTTP API
and the MCP server all answer `{"ok", "command", "exit_code", "data", "error":
{"type", "message", "recovery"}}` (DESIGN.md, Errors)."""

from __future__ import annotations

from typing import Any

from microbox.errors import MicroboxError


def envelope(command: str, exit_code: int, data: Any,
             err: MicroboxError | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"ok": err is None, "command": command, "exit_code": exit_code,
                            "data": data, "error": None}
    if err is not None:
        body["error"] = {"type": err.type, "message": err.message, "recovery": err.recovery}
    return body
