"""Registry credentials: microbox's own 0600 auth file (written by `image login`,
Docker's config.json format), then Docker's `~/.docker/config.json`."""

from __future__ import annotations

import json
import os
from pathlib import Path

from microbox import paths
from microbox.images.reference import DOCKER_HUB


def auth_file() -> Path:
    return paths.home() / "auth.json"


def docker_config() -> Path:
    env = os.environ.get("DOCKER_CONFIG")
    return (Path(env) if env else Path.home() / ".docker") / "config.json"


def _key(entry: str) -> str:
    """Docker's auth keys are hosts, `https://host/v1/` or the Hub's legacy URL."""
    host = entry.split("://", 1)[-1].split("/", 1)[0]
    return DOCKER_HUB if host in ("index.docker.io", "registry-1.docker.io") else host


def _has_entry(path: Path, registry: str) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    auths = data.get("auths") if isinstance(data, dict) else None
    return isinstance(auths, dict) and any(_key(k) == registry for k in auths)


def authfile_for(registry: str) -> Path | None:
    """The file holding credentials for `registry` (ours first), or None: anonymous."""
    for path in (auth_file(), docker_config()):
        if _has_entry(path, registry):
            return path
    return None


def prepare_own_file() -> Path:
    """Our auth file, created 0600 and empty if missing, tightened to 0600 if not."""
    path = auth_file()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        if os.fstat(fd).st_size == 0:
            os.write(fd, b'{"auths": {}}\n')
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    return path
