"""microbox: disposable, hardware-isolated Linux microVMs."""

__version__ = "0.1.0"

from microbox.aio import AsyncBox, AsyncExecution, AsyncRuntime
from microbox.errors import MicroboxError
from microbox.guest.ops import ExitStatus
from microbox.sdk import Box, Execution, Result, Runtime

__all__ = ["AsyncBox", "AsyncExecution", "AsyncRuntime", "Box", "Execution", "ExitStatus",
           "MicroboxError", "Result", "Runtime", "__version__"]
