"""Image references as Docker reads them: [REGISTRY/]REPOSITORY[:TAG][@DIGEST].

A first component with a '.' or ':' in it, or `localhost`, names a registry;
otherwise the registry is Docker Hub and a one-word repository lives under
`library/`. Registries on loopback addresses are spoken to over plain HTTP, as
Docker does.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from microbox.errors import UsageError

DOCKER_HUB = "docker.io"
_HUB_ALIASES = ("docker.io", "index.docker.io", "registry-1.docker.io")
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class Reference:
    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def docker(self) -> str:
        """What skopeo's docker:// transport takes (fully qualified)."""
        return f"{self.registry}/{self.repository}{self._suffix}"

    @property
    def familiar(self) -> str:
        """The short name Docker shows (`alpine:3`, `ghcr.io/o/r:tag`): the stored name."""
        if self.registry == DOCKER_HUB:
            return self.repository.removeprefix("library/") + self._suffix
        return f"{self.registry}/{self.repository}{self._suffix}"

    @property
    def _suffix(self) -> str:
        """`:TAG`, `@DIGEST`, both or neither, as given."""
        return (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")

    @property
    def plain_http(self) -> bool:
        """Loopback registries are reached over plain HTTP without a flag."""
        return is_loopback(self.registry)


def host_of(registry: str) -> str:
    """The host part of `host[:port]` or `[v6]:port`."""
    if registry.startswith("["):
        return registry[1:registry.find("]")]
    return registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry


def is_loopback(registry: str) -> bool:
    host = host_of(registry)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _names_registry(first: str) -> bool:
    return "." in first or ":" in first or first == "localhost" or first.startswith("[")


def looks_remote(text: str) -> bool:
    """True for a reference that names a registry or a Hub namespace (`a/b`), or pins a
    digest: `run` pulls those when missing. A bare word is a local image name."""
    return "/" in text or "@" in text


def parse(text: str) -> Reference:
    """Parse a reference; a usage error names what is wrong."""
    bad = UsageError(f"bad image reference {text!r}; use [REGISTRY/]NAME[:TAG][@sha256:DIGEST]")
    rest, _, digest = text.partition("@")
    if digest and not _DIGEST.fullmatch(digest):
        raise bad
    first, slash, remainder = rest.partition("/")
    if slash and _names_registry(first):
        registry, path = first, remainder
    else:
        registry, path = DOCKER_HUB, rest
    if registry in _HUB_ALIASES:
        registry = DOCKER_HUB
    tag: str | None = None
    last_slash = path.rfind("/")
    colon = path.rfind(":")
    if colon > last_slash:
        path, tag = path[:colon], path[colon + 1:]
        if not _TAG.fullmatch(tag):
            raise bad
    if not path or not all(_COMPONENT.fullmatch(c) for c in path.split("/")):
        raise bad
    if registry == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    if tag is None and not digest:
        tag = "latest"
    return Reference(registry, path, tag, digest or None)
