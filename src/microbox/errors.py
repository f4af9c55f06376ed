"""One exception hierarchy. Each error has a type, a one-sentence message and,
where one exists, the exact command that recovers (DESIGN.md, Errors)."""

from __future__ import annotations


class MicroboxError(Exception):
    """Base of every error microbox reports to a user."""

    type = "error"
    exit_code = 1

    def __init__(self, message: str, recovery: str | None = None, why: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.recovery = recovery
        self.why = why  # what the recovery command does, e.g. "to clear it"

    def __str__(self) -> str:
        """One sentence: the message and, where one exists, the command that recovers."""
        text = self.message.rstrip(".")
        if self.recovery:
            text += f"; run '{self.recovery}'" + (f" {self.why}" if self.why else "")
        return text + "."


class UsageError(MicroboxError):
    """The command line or spec is wrong (exit 2)."""

    type = "usage"
    exit_code = 2


class InvalidSpec(UsageError):
    type = "invalid_spec"


class NotFound(MicroboxError):
    type = "not_found"


class StateError(MicroboxError):
    """The box is not in a state that allows the operation."""

    type = "state"


class HostError(MicroboxError):
    """The host lacks something microbox needs (a package, a kernel, a permission)."""

    type = "host"


class DiskFull(HostError):
    """A filesystem microbox writes to has (nearly) no room left. The recovery
    frees space without touching running boxes."""

    type = "disk_full"
    RECOVERY = "microbox image prune"

    def __init__(self, message: str) -> None:
        super().__init__(message, self.RECOVERY, "or 'microbox gc' to free space there "
                         "(each needs about 1 MiB free to start)")


class CorruptDatabase(HostError):
    """SQLite says the database file is damaged or is no database."""

    type = "corrupt_database"


class BuildError(HostError):
    type = "build"


class VMError(MicroboxError):
    """The VM failed to start or died."""

    type = "vm"


class AgentError(MicroboxError):
    """The guest agent misbehaved or did not answer."""

    type = "agent"


class AgentTimeout(AgentError):
    """The guest agent did not answer in time."""

    type = "timeout"


class GuestNotFound(AgentError):
    """A path the guest agent was asked to read does not exist in the box."""

    type = "not_found"


class GuestRefused(AgentError):
    """The guest agent answered an operation with an error of its own (a path
    that is a directory, a name it will not write through a link...)."""

    type = "guest"


class ConnectFailed(MicroboxError):
    """Nothing in the box accepted a TCP connection (refused, unreachable, timed out)."""

    type = "connect"


class ExecFailed(MicroboxError):
    """A guest command could not be started (not found, not executable, bad user...)."""

    type = "exec"

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.exit_code = {"not_found": 127, "not_executable": 126}.get(kind, 1)


class Refused(MicroboxError):
    type = "refused"


class PackError(MicroboxError):
    """A pack file is corrupt, truncated, or not for this machine."""

    type = "pack"


class NewerPack(PackError):
    """A pack in a format version this microbox does not know yet."""

    type = "pack_version"


class ImageLacks(MicroboxError):
    """The box's image lacks a program an operation needs (git, for workspaces)."""

    type = "image_lacks"


class WorkspaceError(MicroboxError):
    """A git command, or the copy of the files, of a workspace push or export
    failed in the box."""

    type = "workspace"
