"""Trusted CAs of a box (docs/net.md, "Trusted CAs"): `--ca-cert FILE` and the
host's own bundle (`--trust-host-ca`, or MICROBOX_TRUST_HOST_CA=1), checked
on the host when the box is made, and what the guest gets at every start
(core/catrust.py writes it): the certificates appended, between markers, to
the image's CA bundle, the same whole bundle at BUNDLE (which exists whatever
the image), the added certificates alone at EXTRA, and every exec's
SSL_CERT_FILE, REQUESTS_CA_BUNDLE, PIP_CERT, NODE_EXTRA_CA_CERTS naming them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from microbox.errors import HostError, InvalidSpec

# The images' own bundles, first found wins: Debian/Ubuntu/Alpine, Fedora/RHEL, openSUSE.
GUEST_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt",
                 "/etc/ssl/ca-bundle.pem")
BUNDLE = "/etc/microbox/ca-bundle.crt"  # the image's bundle (if any) and the added CAs
EXTRA = "/etc/microbox/ca-extra.crt"  # the added CAs alone (NODE_EXTRA_CA_CERTS adds to node's)
BEGIN = "# microbox: added CAs (docs/net.md); replaced at every start\n"
END = "# microbox: end of added CAs\n"
MAX_BUNDLE = 16 << 20  # bytes of an image's bundle read back

_PEM = re.compile(r"-----BEGIN CERTIFICATE-----\r?\n(.*?)-----END CERTIFICATE-----", re.S)
TRUST_ENV = "MICROBOX_TRUST_HOST_CA"


def trust_host_default(env: Mapping[str, str] = os.environ) -> bool:
    """The host's setting: MICROBOX_TRUST_HOST_CA=1 makes --trust-host-ca the default."""
    return env.get(TRUST_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def is_pem(entry: str) -> bool:
    return entry.lstrip().startswith("-----BEGIN")


def parse(text: str, what: str) -> str:
    """The certificates of PEM `text`, normalized (one per block, nothing else),
    or one sentence naming the fix; `what` names the source in it."""
    blocks = [f"-----BEGIN CERTIFICATE-----\n{b.strip()}\n-----END CERTIFICATE-----\n"
              for b in _PEM.findall(text)]
    fix = ("give a PEM file of CA certificates (-----BEGIN CERTIFICATE-----); convert a DER "
           "one with 'openssl x509 -inform der -in FILE -out FILE.pem'")
    if not blocks:
        raise InvalidSpec(f"--ca-cert {what} holds no PEM certificate; {fix}")
    import ssl  # here: `microbox exec` reads specs, and ssl costs it 4 ms to import

    try:
        ssl.create_default_context(cadata="".join(blocks))
    except (ssl.SSLError, ValueError):
        raise InvalidSpec(f"--ca-cert {what} holds a certificate that cannot be read; {fix}") \
            from None
    return "".join(blocks)


def load(entry: str) -> str:
    """One --ca-cert: PEM text as it is, or a file read now; normalized PEM."""
    if is_pem(entry):
        return parse(entry, "(PEM text)")
    try:
        data = Path(entry).read_bytes()[:MAX_BUNDLE]
    except OSError as exc:
        raise InvalidSpec(f"--ca-cert {entry}: {exc.strerror or exc}; give the path of a "
                          "readable PEM file") from None
    return parse(data.decode("utf-8", errors="replace"), entry)


def host_bundle() -> str:
    """The host's own CA bundle (SSL_CERT_FILE, else OpenSSL's default file)."""
    import ssl

    paths = ssl.get_default_verify_paths()
    for name in (os.environ.get(paths.openssl_cafile_env), paths.cafile, paths.openssl_cafile):
        if name and os.path.isfile(name):
            return parse(Path(name).read_text(errors="replace"), name)
    raise HostError("the host has no CA bundle for --trust-host-ca to copy",
                    "apt-get install -y ca-certificates")


def extra(ca_certs: tuple[str, ...], trust_host: bool) -> str:
    """The PEM a box adds to its image's trust ('' when it adds none)."""
    return (host_bundle() if trust_host else "") + "".join(ca_certs)


def merged(image_bundle: bytes, added: str) -> bytes:
    """The image's bundle with the added CAs appended between markers; the
    markers of an earlier start (and what they held) dropped first."""
    text = image_bundle.decode("utf-8", errors="replace")
    start = text.find(BEGIN)
    if start >= 0:
        end = text.find(END, start)
        text = text[:start] + (text[end + len(END):] if end >= 0 else "")
    if text and not text.endswith("\n"):
        text += "\n"
    return (text + BEGIN + added + END).encode()


def exec_env(has_cas: bool) -> dict[str, str]:
    """Defaults for every exec of a box that adds CAs (the box's -e and exec's -e win)."""
    if not has_cas:
        return {}
    return {"SSL_CERT_FILE": BUNDLE, "REQUESTS_CA_BUNDLE": BUNDLE, "PIP_CERT": BUNDLE,
            "NODE_EXTRA_CA_CERTS": EXTRA}
