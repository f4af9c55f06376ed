"""The host's own HTTP proxies (docs/net.md, "Behind a proxy"): read from the
environment of the command that starts a box, and written into the box's
policy file, so that its egress proxy dials through them (after deciding the
real destination by the box's policy). As curl and Python's urllib do, the
lower-case variable wins over the upper-case one; NO_PROXY is passed on as
the host had it (host/shim/upstream.go matches it).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping

from microbox.errors import HostError


def _pick(env: Mapping[str, str], name: str) -> str:
    return (env.get(name.lower()) or env.get(name.upper()) or "").strip()


def _check(name: str, value: str) -> str:
    if not value:
        return ""
    url = urllib.parse.urlsplit(value if "://" in value else f"http://{value}")
    try:
        url.port  # noqa: B018 (a bad port raises)
    except ValueError:
        url = url._replace(netloc="")
    if url.scheme != "http" or not url.hostname:
        raise HostError(f"the host's {name}={value} is not a proxy microbox can dial (an "
                        "http://HOST:PORT URL); fix or unset it before starting the box")
    return value


def from_environ(env: Mapping[str, str]) -> dict[str, str] | None:
    """The policy file's `upstream` section for the proxies in `env`; None without any."""
    https = _check("HTTPS_PROXY", _pick(env, "https_proxy"))
    http = _check("HTTP_PROXY", _pick(env, "http_proxy"))
    if not https and not http:
        return None
    return {"https": https, "http": http, "no_proxy": _pick(env, "no_proxy")}
