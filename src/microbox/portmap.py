"""Published ports (`-p [HOST_IP:]HOST_PORT:GUEST_PORT[/tcp]`, Docker's syntax):
parsing, Docker's display, and binding the host side.

The host side is bound by the command that starts the box, before the VM
boots, so a taken port fails the start with nothing made; the bound sockets
then pass to the box's shim, which serves them for as long as the box lives.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from microbox.errors import InvalidSpec

DEFAULT_HOST_IP = "127.0.0.1"  # safe by default: say -p 0.0.0.0:... to publish wider


@dataclass(frozen=True)
class PortMap:
    host_port: int
    guest_port: int
    host_ip: str = DEFAULT_HOST_IP
    proto: str = "tcp"

    def __str__(self) -> str:
        """Docker's `port` format: 80/tcp -> 127.0.0.1:8080."""
        host = f"[{self.host_ip}]" if ":" in self.host_ip else self.host_ip
        return f"{self.guest_port}/{self.proto} -> {host}:{self.host_port}"

    def to_json(self) -> dict[str, Any]:
        return {"host_ip": self.host_ip, "host_port": self.host_port,
                "guest_port": self.guest_port, "proto": self.proto}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PortMap:
        return cls(host_port=int(data["host_port"]), guest_port=int(data["guest_port"]),
                   host_ip=str(data.get("host_ip", DEFAULT_HOST_IP)),
                   proto=str(data.get("proto", "tcp")))


def _port(text: str, what: str, spec: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise InvalidSpec(f"bad {what} port {text!r} in -p {spec}: use a number from 1 to 65535")
    return int(text)


def parse(spec: str) -> PortMap:
    """One -p value."""
    body, _, proto = spec.partition("/")
    if proto and proto != "tcp":
        raise InvalidSpec(f"-p {spec}: only tcp ports can be published")
    host_ip = DEFAULT_HOST_IP
    if body.startswith("["):  # [v6]:HOST:GUEST
        end = body.find("]:")
        if end < 0:
            raise InvalidSpec(f"bad -p {spec}: use [HOST_IP:]HOST_PORT:GUEST_PORT")
        host_ip, body = body[1:end], body[end + 2:]
    elif body.count(":") == 2:
        host_ip, body = body.split(":", 1)
    parts = body.split(":")
    if len(parts) != 2:
        raise InvalidSpec(f"bad -p {spec}: use [HOST_IP:]HOST_PORT:GUEST_PORT "
                          "(a host port is required)")
    try:
        host_ip = str(ipaddress.ip_address(host_ip))
    except ValueError:
        raise InvalidSpec(f"bad host address {host_ip!r} in -p {spec}: use an IP address"
                          ) from None
    return PortMap(_port(parts[0], "host", spec), _port(parts[1], "guest", spec), host_ip)


def parse_all(specs: Iterable[str | PortMap]) -> tuple[PortMap, ...]:
    """-p values (or PortMaps, as the SDK takes them), none published twice."""
    maps = tuple(s if isinstance(s, PortMap) else parse(s) for s in specs)
    seen: set[tuple[str, int]] = set()
    for m in maps:
        if (m.host_ip, m.host_port) in seen:
            raise InvalidSpec(f"host port {m.host_ip}:{m.host_port} is published twice")
        seen.add((m.host_ip, m.host_port))
    return maps


def bind(maps: Sequence[PortMap]) -> list[socket.socket]:
    """Listening sockets for `maps`, or InvalidSpec naming the port that is taken
    (and nothing left open)."""
    socks: list[socket.socket] = []
    try:
        for m in maps:
            family = socket.AF_INET6 if ":" in m.host_ip else socket.AF_INET
            s = socket.socket(family, socket.SOCK_STREAM)
            socks.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((m.host_ip, m.host_port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise InvalidSpec(f"host port {m.host_ip}:{m.host_port} is already in use; "
                                      f"publish another with -p OTHER:{m.guest_port}") from None
                raise InvalidSpec(f"cannot publish {m.host_ip}:{m.host_port}: "
                                  f"{exc.strerror}") from None
            s.listen(128)
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks


def check_free(maps: Sequence[PortMap]) -> None:
    """Fail now, naming the port, if any host port of `maps` is taken."""
    for s in bind(maps):
        s.close()
