"""microbox: disposable, hardware-isolated Linux microVMs.

The SDK's names are imported on first use, so `microbox` (the CLI) does not pay
for asyncio and the rest of the SDK at every start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from microbox import lazy

__version__ = "0.1.0"

if TYPE_CHECKING:
    from microbox.agent.ops import ExitStatus
    from microbox.errors import MicroboxError
    from microbox.execution import Execution, Result
    from microbox.sdk import Box, Runtime
    from microbox.sdk.aio import AsyncBox, AsyncExecution, AsyncRuntime
    from microbox.workspace import WorkspaceFile, WorkspacePush, workspace_files

_LAZY = {
    "AsyncBox": "microbox.sdk.aio", "AsyncExecution": "microbox.sdk.aio",
    "AsyncRuntime": "microbox.sdk.aio",
    "MicroboxError": "microbox.errors", "ExitStatus": "microbox.agent.ops",
    "Box": "microbox.sdk", "Execution": "microbox.execution", "Result": "microbox.execution",
    "Runtime": "microbox.sdk", "WorkspaceFile": "microbox.workspace",
    "WorkspacePush": "microbox.workspace", "workspace_files": "microbox.workspace",
}

__all__ = ["AsyncBox", "AsyncExecution", "AsyncRuntime", "Box", "Execution", "ExitStatus",
           "MicroboxError", "Result", "Runtime", "WorkspaceFile", "WorkspacePush", "__version__",
           "workspace_files"]


__getattr__ = lazy.attributes(__name__, _LAZY)
