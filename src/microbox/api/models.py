"""Request and response bodies of the HTTP API (they make /openapi.json)."""

from __future__ import annotations

from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from microbox.spec import DEFAULT_IMAGE, DEFAULT_MEMORY_MIB

T = TypeVar("T")
Encoding = Literal["auto", "base64"]


class ErrorBody(BaseModel):
    type: str
    message: str
    recovery: str | None = None


class Envelope(BaseModel, Generic[T]):
    """Every JSON answer, as the CLI's --json prints it."""

    ok: bool
    command: str
    exit_code: int
    data: T | None = None
    error: ErrorBody | None = None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateBox(_Strict):
    image: str = DEFAULT_IMAGE
    name: str | None = None
    cpus: int = 1
    memory_mib: int = DEFAULT_MEMORY_MIB
    env: dict[str, str] = Field(default_factory=dict)
    workdir: str | None = None
    user: str | None = None
    accel: Literal["auto", "kvm", "tcg"] = "auto"
    labels: dict[str, str] = Field(default_factory=dict)
    cold: bool = Field(False, description="Boot the kernel instead of restoring the image's "
                       "warm-start template.")
    ports: list[str] = Field(default_factory=list, description="Published ports, "
                             "\"[HOST_IP:]HOST_PORT:GUEST_PORT\" (127.0.0.1 unless HOST_IP is "
                             "given), served for as long as the box runs.")
    net: Literal["user", "none", "tap"] = Field(
        "user", description="user: egress through the box's filtering proxy (docs/net.md); "
        "none: no network device; tap (a root server): a routed TAP in the box's own network "
        "namespace, filtered by nftables.")
    allow_hosts: list[str] = Field(default_factory=list, description="Host names (*.x: the "
                                   "names below x); with any, other names are refused.")
    allow_cidrs: list[str] = Field(default_factory=list,
                                   description="Addresses or ranges allowed over every block.")
    deny_all: bool = Field(False, description="Refuse everything not allowed above.")
    allow_private: bool = Field(False, description="Allow loopback, the host's addresses and "
                                "private ranges (never 169.254.169.254 unless allow_cidrs "
                                "names it).")
    add_hosts: list[str] = Field(default_factory=list,
                                 description="NAME:ADDRESS entries for the proxy's resolver.")
    mounts: list[str] = Field(default_factory=list, description="Host folders and named "
                              "volumes, \"HOST_DIR|VOLUME:GUEST_DIR[:ro]\" (docs/mounts.md); "
                              "host paths are the server's host's.")
    ca_certs: list[str] = Field(default_factory=list, description="PEM text of CA certificates "
                                "the box trusts besides its image's (docs/net.md).")
    trust_host_ca: bool | None = Field(None, description="Trust the server host's CA bundle "
                                       "too (null: the server's MICROBOX_TRUST_HOST_CA).")
    start: bool = Field(True, description="Boot it now (detached from the server).")
    rm: bool = Field(False, description="Remove the box when its VM exits by itself "
                     "(its command ended, or it crashed); needs start.")
    command: list[str] | None = Field(
        None, description="Replaces the image's Cmd; with the image's Entrypoint it runs as "
        "the box's main process, and the box powers off when it exits: `microbox run -d "
        "IMAGE -- CMD` (an image's own Entrypoint or Cmd runs even without one).")


class SnapshotInfo(BaseModel):
    id: str
    name: str
    box: str
    created_at: float
    image: str
    image_digest: str
    auto: bool = Field(description="Made by fork: removed by gc once no box uses it.")
    size: int = Field(description="Bytes on disk.")
    cpus: int
    memory_mib: int
    used_by: list[str] = Field(description="Ids of boxes restored from it.")


class PoolInfo(BaseModel):
    id: str
    image: str
    cpus: int
    memory_mib: int
    accel: str
    kernel: str | None
    net: str
    size: int = Field(description="How many boxes it keeps ready.")
    ready: int = Field(description="How many are ready now.")
    created_at: float


class NewPool(_Strict):
    image: str = DEFAULT_IMAGE
    size: int = 1
    cpus: int = 1
    memory_mib: int = DEFAULT_MEMORY_MIB
    accel: Literal["auto", "kvm", "tcg"] = "auto"
    net: Literal["user", "none", "tap"] = "user"


class NewSnapshot(_Strict):
    name: str | None = None


class ForkBody(_Strict):
    count: int = Field(1, ge=1, le=256)
    name_prefix: str | None = None


class RestoreBody(_Strict):
    name: str | None = None


class SetBox(_Strict):
    """Fields left out (null) keep the box's value; a list given replaces the box's."""

    cpus: int | None = None
    memory_mib: int | None = None
    net: Literal["user", "none", "tap"] | None = None
    allow_hosts: list[str] | None = None
    allow_cidrs: list[str] | None = None
    deny_all: bool | None = None
    allow_private: bool | None = None
    add_hosts: list[str] | None = None
    reset_policy: bool = Field(False, description="Drop the egress policy before applying "
                               "the fields given.")


class Deleted(BaseModel):
    deleted: str


class ExecBody(_Strict):
    command: list[str] = Field(min_length=1)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    user: str | None = None
    timeout: float | None = Field(None, gt=0, description="Kill it after this many seconds "
                                  "(exit code 124).")
    encoding: Encoding = Field("auto", description="Output as UTF-8 text where it decodes "
                               "(auto), or always base64.")


class RunBody(ExecBody):
    stdin: str | None = Field(None, description="Fed to the command, then end of file.")
    stdin_encoding: Literal["utf-8", "base64"] = "utf-8"


class WsStart(ExecBody):
    tty: bool = False
    rows: int = Field(24, ge=1, le=1000)
    cols: int = Field(80, ge=1, le=1000)


class RunResult(BaseModel):
    exit_code: int = Field(description="The code; 128+N for signal N; 124 on timeout.")
    code: int | None
    signal: int | None
    timed_out: bool
    encoding: Literal["utf-8", "base64"]
    stdout: str
    stderr: str
    stdout_dropped: int = 0
    stderr_dropped: int = 0


class Uploaded(BaseModel):
    path: str
    size: int
    mode: int


class Logs(BaseModel):
    log: str


class ImageInfo(BaseModel):
    name: str
    digest: str
    size: int
    source: str


class BuildBody(_Strict):
    context: str = Field(description="The build context: a directory on the server's host "
                         "(absolute path).")
    tag: str | None = Field(None, description="NAME[:TAG] of the image made.")
    dockerfile: str | None = Field(None, description="The Dockerfile (default: "
                                   "CONTEXT/Dockerfile).")
    build_args: dict[str, str] = Field(default_factory=dict)
    target: str | None = None
    no_cache: bool = False
    net: str = "user"


class CommitBody(_Strict):
    name: str = Field(description="NAME[:TAG] of the image made.")
    changes: list[str] = Field(default_factory=list, description="Dockerfile lines for "
                               "the image's config (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, "
                               "USER, WORKDIR, STOPSIGNAL, VOLUME).")


class Health(BaseModel):
    status: str
    version: str


class Copied(BaseModel):
    """What a copy did (microbox.cp.report.CopyReport)."""

    files: int
    dirs: int
    symlinks: int
    bytes: int
    hardlinks: int
    skipped: int
    started: bool
