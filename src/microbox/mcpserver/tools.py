"""The tools a model sees: their names, descriptions, bounded inputs and results.

Each tool is a few lines over the async SDK (Sandbox for scope and lifetime);
a MicroboxError comes back as a tool error carrying its one sentence.
"""

import base64
import binascii
import contextlib
import io
from collections.abc import Callable, Iterator
from typing import Annotated, Any, Literal, TypeVar

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations
from pydantic import BaseModel, Field

from microbox import __version__
from microbox.agent.ops import TIMEOUT_EXIT
from microbox.errors import MicroboxError
from microbox.mcpserver.sandbox import MAX_BOXES, Sandbox
from microbox.sdk.aio import AsyncBox
from microbox.spec import DEFAULT_IMAGE, DEFAULT_MEMORY_MIB, MIN_MEMORY_MIB

KIB, MIB = 1 << 10, 1 << 20
MAX_CPUS = 4
MAX_MEMORY_MIB = 2048
EXEC_TIMEOUT, EXEC_TIMEOUT_MAX = 60.0, 600.0  # seconds
OUTPUT_CAP, OUTPUT_CAP_MAX = 64 * KIB, 1 * MIB  # bytes kept per stream
READ_CAP, READ_CAP_MAX = 1 * MIB, 4 * MIB
WRITE_MAX = 4 * MIB
AGENT_GRACE = 30.0  # host-side bound past a command's own timeout, for a box that stops answering

INSTRUCTIONS = """\
Disposable Linux sandboxes (microVMs). Call create_box to get a box, then exec,
write_file, read_file and list_dir inside it; delete_box when done. Boxes are
isolated from this host and from each other, and every box this server created
is deleted when the server exits. You can act only on boxes you created here."""

BoxRef = Annotated[str, Field(description="The box's name or id, as create_box or list_boxes "
                                          "returned it.")]
GuestPath = Annotated[str, Field(pattern=r"^/", description="Absolute path inside the box.")]


class BoxInfo(BaseModel):
    id: str
    name: str
    image: str
    status: str = Field(description="running, paused, stopped or error (the VM died).")
    cpus: int
    memory_mib: int


class BoxList(BaseModel):
    boxes: list[BoxInfo]
    max_boxes: int = Field(description="How many boxes this server lets exist at once.")


class ExecResult(BaseModel):
    exit_code: int = Field(description=f"The command's exit code; 128+N if signal N killed it; "
                                       f"{TIMEOUT_EXIT} if its timeout did.")
    timed_out: bool
    stdout: str = Field(description="UTF-8 (invalid bytes replaced), at most max_output_bytes.")
    stderr: str
    stdout_bytes: int = Field(description="Bytes the command wrote to stdout in all.")
    stderr_bytes: int
    stdout_truncated: bool
    stderr_truncated: bool
    note: str | None = Field(None, description="What was cut or killed, when anything was.")


class FileContent(BaseModel):
    path: str
    size: int
    mode: str = Field(description="Permission bits, octal.")
    encoding: Literal["utf-8", "base64"]
    content: str


class Written(BaseModel):
    path: str
    size: int
    mode: str


class DirListing(BaseModel):
    path: str
    listing: str = Field(description="The output of `ls -la PATH` in the box.")
    truncated: bool


class Deleted(BaseModel):
    id: str
    name: str


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """A MicroboxError or a host error becomes a tool error with its one sentence."""
    try:
        yield
    except MicroboxError as err:
        raise ToolError(str(err)) from None
    except OSError as err:
        raise ToolError(f"the host refused: {err.strerror or err}"
                        + (f": {err.filename}" if err.filename else "")) from None


def _info(box: AsyncBox) -> BoxInfo:
    """The model's view of a box: the fields of the SDK's one rendering it needs."""
    info = box.sync.info().to_json()
    return BoxInfo.model_validate({k: info[k] for k in BoxInfo.model_fields})


def _note(timed_out: float | None, streams: dict[str, tuple[int, int]]) -> str | None:
    parts = [f"the command was killed after its {timed_out:g}-second timeout"] if timed_out else []
    for name, (kept, total) in streams.items():
        if total > kept:
            parts.append(f"{name} truncated: showing the first {kept} of {total} bytes")
    if not parts:
        return None
    if len(parts) > int(bool(timed_out)):
        parts.append("redirect the output to a file and read it with read_file, or raise "
                     f"max_output_bytes (at most {OUTPUT_CAP_MAX})")
    return "; ".join(parts) + "."


F = TypeVar("F", bound=Callable[..., Any])
READ_ONLY = ToolAnnotations(read_only_hint=True)


def _tool(app: MCPServer[Any], hints: ToolAnnotations, name: str | None = None
          ) -> Callable[[F], F]:
    """Register a tool; its description is its docstring as one paragraph."""
    def add(fn: F) -> F:
        app.add_tool(fn, name=name, description=" ".join((fn.__doc__ or "").split()),
                     annotations=hints)
        return fn
    return add


def build(sandbox: Sandbox) -> MCPServer[Any]:
    """The MCP server with every tool bound to `sandbox`."""
    app: MCPServer[Any] = MCPServer("microbox", instructions=INSTRUCTIONS, version=__version__,
                                    log_level="WARNING")
    @_tool(app, ToolAnnotations(read_only_hint=False, destructive_hint=False))
    async def create_box(
        image: Annotated[str, Field(description="Image to boot: debian (the default: a shell, "
                                    "python3, git, curl), busybox, or a registry "
                                    "reference.")] = DEFAULT_IMAGE,
        name: Annotated[str | None, Field(
            description="Optional name (letters, digits, '_', '.', '-'; also the hostname); "
                        "a random one is chosen if omitted.")] = None,
        cpus: Annotated[int, Field(ge=1, le=MAX_CPUS, description="Virtual CPUs.")] = 1,
        memory_mib: Annotated[int, Field(ge=MIN_MEMORY_MIB, le=MAX_MEMORY_MIB,
                                         description="Memory in MiB.")] = DEFAULT_MEMORY_MIB,
        env: Annotated[dict[str, str] | None, Field(
            description="Environment variables for every command run in the box.")] = None,
    ) -> BoxInfo:
        """Create and boot a new, empty Linux sandbox (a microVM) and return its id and name.
        Booting takes about a second. Use the name or id with the other tools."""
        with _errors():
            box = await sandbox.create(image, name=name, cpus=cpus, memory_mib=memory_mib,
                                       env=env or {})
        return _info(box)

    @_tool(app, ToolAnnotations(read_only_hint=False), name="exec")
    async def exec_command(
        box: BoxRef,
        argv: Annotated[list[str], Field(
            min_length=1, description='Program and arguments, run without a shell, e.g. '
            '["ls", "-l", "/tmp"]. For pipes or redirection use ["sh", "-c", "SCRIPT"].')],
        stdin: Annotated[str | None, Field(description="Text fed to the command's stdin "
                                                       "(none: stdin is empty).")] = None,
        cwd: Annotated[str | None, Field(pattern=r"^/", description="Working directory "
                                         "(absolute); default: the image's.")] = None,
        env: Annotated[dict[str, str] | None, Field(
            description="Extra environment variables for this command.")] = None,
        timeout_seconds: Annotated[float, Field(
            gt=0, le=EXEC_TIMEOUT_MAX,
            description="Kill the command (and its children) after this long.")] = EXEC_TIMEOUT,
        max_output_bytes: Annotated[int, Field(
            ge=0, le=OUTPUT_CAP_MAX, description="Bytes of stdout and of stderr returned; "
            "the rest is counted and dropped.")] = OUTPUT_CAP,
    ) -> ExecResult:
        """Run a command in a box and wait for it to finish; returns its exit code, stdout and
        stderr. Output beyond max_output_bytes per stream is cut, and the result says so with
        the byte counts; a command still running after timeout_seconds is killed."""
        with _errors():
            target = sandbox.find(box)
            try:
                with anyio.fail_after(timeout_seconds + AGENT_GRACE):
                    r = await target.run(argv, input=None if stdin is None else stdin.encode(),
                                         cwd=cwd, env=env, timeout=timeout_seconds,
                                         limit=max_output_bytes)
            except TimeoutError:
                raise ToolError(f"box {box} did not answer within {AGENT_GRACE:g} seconds "
                                "after the command's timeout; delete it with delete_box and "
                                "create a new one") from None
        timed_out = r.status.timed_out
        totals = {"stdout": (len(r.stdout), len(r.stdout) + r.stdout_dropped),
                  "stderr": (len(r.stderr), len(r.stderr) + r.stderr_dropped)}
        return ExecResult(
            exit_code=r.status.reported_code, timed_out=timed_out,
            stdout=r.stdout.decode("utf-8", "replace"), stderr=r.stderr.decode("utf-8", "replace"),
            stdout_bytes=totals["stdout"][1], stderr_bytes=totals["stderr"][1],
            stdout_truncated=r.stdout_dropped > 0, stderr_truncated=r.stderr_dropped > 0,
            note=_note(timeout_seconds if timed_out else None, totals))

    @_tool(app, READ_ONLY)
    async def read_file(
        box: BoxRef, path: GuestPath,
        encoding: Annotated[Literal["auto", "base64"], Field(
            description="auto: UTF-8 text when the file is valid UTF-8, else base64; "
                        "base64: always base64.")] = "auto",
        max_bytes: Annotated[int, Field(ge=1, le=READ_CAP_MAX, description="Refuse a larger "
                                        "file (read part of it with exec, e.g. head -c).")]
        = READ_CAP,
    ) -> FileContent:
        """Read a whole file from a box. The result's encoding field says whether content is
        UTF-8 text or base64 of the raw bytes."""
        buf = io.BytesIO()
        with _errors():
            mode = await sandbox.find(box).get(path, buf, max_bytes=max_bytes)
        data = buf.getvalue()
        text: str | None = None
        if encoding == "auto":
            with contextlib.suppress(UnicodeDecodeError):
                text = data.decode("utf-8")
        return FileContent(path=path, size=len(data), mode=f"{mode:o}",
                           encoding="base64" if text is None else "utf-8",
                           content=base64.b64encode(data).decode() if text is None else text)

    @_tool(app, ToolAnnotations(read_only_hint=False, destructive_hint=True,
                                idempotent_hint=True))
    async def write_file(
        box: BoxRef, path: GuestPath,
        content: Annotated[str, Field(description="The file's content, encoded as `encoding` "
                                                  "says.")],
        encoding: Annotated[Literal["utf-8", "base64"], Field(
            description="utf-8 for text; base64 for any bytes.")] = "utf-8",
        mode: Annotated[str, Field(pattern=r"^[0-7]{3,4}$",
                                   description="Permission bits, octal, e.g. 755.")] = "644",
    ) -> Written:
        """Create or replace a file in a box (missing parent directories are created),
        at most 4 MiB."""
        try:
            data = (content.encode() if encoding == "utf-8"
                    else base64.b64decode(content, validate=True))
        except binascii.Error:
            raise ToolError("content is not valid base64; encode the bytes with standard "
                            "base64, or pass text with encoding utf-8") from None
        if len(data) > WRITE_MAX:
            raise ToolError(f"content is {len(data)} bytes, over the {WRITE_MAX}-byte limit; "
                            "write it in parts and join them with exec")
        with _errors():
            await sandbox.find(box).put(io.BytesIO(data), path, int(mode, 8))
        return Written(path=path, size=len(data), mode=mode)

    @_tool(app, READ_ONLY)
    async def list_dir(box: BoxRef, path: GuestPath = "/") -> DirListing:
        """List a directory in a box (`ls -la`: type, permissions, owner, size, date, name).
        Needs an `ls` in the image, as every image with a shell has."""
        with _errors():
            r = await sandbox.find(box).run(["ls", "-la", "--", path], timeout=EXEC_TIMEOUT,
                                            limit=OUTPUT_CAP)
        if r.exit_code != 0:
            why = r.stderr.decode("utf-8", "replace").strip() or f"ls exited {r.exit_code}"
            raise ToolError(f"cannot list {path}: {why}")
        return DirListing(path=path, listing=r.stdout.decode("utf-8", "replace"),
                          truncated=r.stdout_dropped > 0)

    @_tool(app, ToolAnnotations(read_only_hint=False, destructive_hint=True))
    async def delete_box(box: BoxRef) -> Deleted:
        """Delete a box: its VM is killed and its disk removed. Anything not read out first
        is lost."""
        with _errors():
            gone = await sandbox.delete(box)
        return Deleted(id=gone.id, name=gone.name)

    @_tool(app, ToolAnnotations(read_only_hint=False, destructive_hint=False))
    async def fork_box(
        box: BoxRef,
        count: Annotated[int, Field(ge=1, le=MAX_BOXES, description="Clones to make.")] = 1,
    ) -> BoxList:
        """Clone a running box: each clone continues from this moment (files, running
        background processes) but is its own machine from then on. Use it to try
        several approaches from one prepared state. Takes about a second."""
        with _errors():
            clones = await sandbox.fork(box, count)
        return BoxList(boxes=[_info(c) for c in clones], max_boxes=MAX_BOXES)

    @_tool(app, READ_ONLY)
    async def list_boxes() -> BoxList:
        """The boxes this server created that still exist, with their status."""
        with _errors():
            found = await sandbox.list()
        return BoxList(boxes=[_info(b) for b in found], max_boxes=MAX_BOXES)

    return app
