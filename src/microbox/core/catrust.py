"""A box's added CAs written into its guest at every start, before the first
command runs (net/cacerts.py says what goes where; docs/net.md, "Trusted
CAs"). Done over the agent's file operations, so any image works, with or
without a shell; a box that adds none costs nothing here.
"""

from __future__ import annotations

import io

from microbox.agent import ops
from microbox.agent.channel import Channel
from microbox.errors import GuestNotFound, GuestRefused
from microbox.net import cacerts
from microbox.spec import BoxSpec


def _read(channel: Channel, path: str) -> bytes | None:
    buf = io.BytesIO()
    try:
        ops.get_file(channel, path, buf, cacerts.MAX_BUNDLE)
    except (GuestNotFound, GuestRefused):
        return None  # not there (or not a file): the image has no bundle at this path
    return buf.getvalue()


def install(channel: Channel, spec: BoxSpec) -> None:
    """Append the box's CAs to the image's bundle (replacing those of an
    earlier start) and write BUNDLE and EXTRA; nothing for a box without any."""
    if not spec.ca_certs and not spec.trust_host_ca:
        return
    added = cacerts.extra(spec.ca_certs, spec.trust_host_ca)
    whole = None
    for path in cacerts.GUEST_BUNDLES:
        found = _read(channel, path)
        if found is not None:
            whole = cacerts.merged(found, added)
            ops.put_file(channel, io.BytesIO(whole), path, 0o644)
            break
    if whole is None:  # an image without a bundle (busybox): the added CAs are all it trusts
        whole = cacerts.merged(b"", added)
    ops.put_file(channel, io.BytesIO(whole), cacerts.BUNDLE, 0o644)
    ops.put_file(channel, io.BytesIO(added.encode()), cacerts.EXTRA, 0o644)
