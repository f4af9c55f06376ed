"""An image's run configuration (OCI `config`: Env, Entrypoint, Cmd, WorkingDir,
User, Labels, ExposedPorts, StopSignal) and Docker's rules for combining it with
what the user asked for."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from microbox.spec import BoxSpec


@dataclass(frozen=True)
class ImageConfig:
    env: dict[str, str] = field(default_factory=dict)
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    workdir: str | None = None
    user: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    exposed_ports: tuple[str, ...] = ()  # "80/tcp", as the OCI map's keys, sorted
    stop_signal: str | None = None  # "SIGQUIT", as given

    def to_oci(self) -> dict[str, Any]:
        """The OCI `config` object (every field, empty ones included)."""
        return {"Env": [f"{k}={v}" for k, v in self.env.items()],
                "Entrypoint": self.entrypoint, "Cmd": self.cmd,
                "WorkingDir": self.workdir or "", "User": self.user or "",
                "Labels": dict(self.labels),
                "ExposedPorts": {p: {} for p in self.exposed_ports},
                "StopSignal": self.stop_signal or ""}

    def to_json(self) -> str:
        return json.dumps(self.to_oci(), sort_keys=True)

    @classmethod
    def from_oci(cls, config: dict[str, Any] | None) -> ImageConfig:
        """From the `config` object of an OCI/Docker image config (any field may be
        null or missing: rows stored before Labels, ExposedPorts and StopSignal
        read as having none)."""
        c = config or {}
        env: dict[str, str] = {}
        for pair in c.get("Env") or []:
            key, _, value = str(pair).partition("=")
            if key:
                env[key] = value
        labels = c.get("Labels") or {}
        ports = c.get("ExposedPorts") or {}
        return cls(env=env, entrypoint=[str(a) for a in c.get("Entrypoint") or []],
                   cmd=[str(a) for a in c.get("Cmd") or []],
                   workdir=str(c.get("WorkingDir") or "") or None,
                   user=str(c.get("User") or "") or None,
                   labels={str(k): str(v) for k, v in labels.items()}
                   if isinstance(labels, dict) else {},
                   exposed_ports=tuple(sorted(str(p) for p in ports)),
                   stop_signal=str(c.get("StopSignal") or "") or None)

    @classmethod
    def from_json(cls, text: str | None) -> ImageConfig:
        return cls.from_oci(json.loads(text) if text else None)

    def command(self, entrypoint: str | None, args: list[str]) -> list[str]:
        """Docker's rule: `--entrypoint` replaces Entrypoint (and drops the image's
        Cmd); arguments after IMAGE replace Cmd."""
        if entrypoint is not None:
            return ([entrypoint] if entrypoint else []) + args
        return self.entrypoint + (args or self.cmd)


def apply(config: ImageConfig, spec: BoxSpec) -> BoxSpec:
    """The spec with the image's defaults filled in: its Env under the user's `-e`,
    its WorkingDir and User where `-w`/`-u` were not given. Idempotent."""
    return replace(spec, env={**config.env, **spec.env},
                   workdir=spec.workdir or config.workdir, user=spec.user or config.user)
