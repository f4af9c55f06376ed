"""Debian's `skopeo`: the registry client. It speaks the distribution API (bearer
and basic auth, indexes and manifest lists, Docker and OCI media types, gzip and
zstd) and verifies every blob's digest as it lands.

microbox runs it with a policy file of its own, for linux/amd64, into a private
OCI layout whose blobs go to the store's shared layer dir (`--dest-shared-blob-dir`):
a blob is written under a temporary name and renamed once verified, so a killed
pull leaves no half blob and a retry reuses every layer already there. A push
copies the other way, from an OCI layout `image push` wrote.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from microbox import paths
from microbox.errors import HostError, NotFound, Refused
from microbox.images.reference import Reference

POLICY = '{"default": [{"type": "insecureAcceptAnything"}]}\n'
PLATFORM = ["--override-os", "linux", "--override-arch", "amd64"]


def _skopeo() -> str:
    exe = shutil.which("skopeo")
    if exe is None:
        raise HostError("skopeo is not installed", "apt-get install -y skopeo")
    return exe


def policy_file() -> Path:
    path = paths.images_dir() / "policy.json"
    if not path.exists() or path.read_text() != POLICY:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(POLICY)
        tmp.replace(path)
    return path


def _why(stderr: str) -> str:
    """skopeo's fatal message without its logrus decoration."""
    found = re.findall(r'msg="((?:[^"\\]|\\.)*)"', stderr)
    text = found[-1].replace('\\"', '"') if found else stderr.strip().splitlines()[-1:]
    return str(text if isinstance(text, str) else " ".join(text))[:400]


def error_for(ref: Reference, stderr: str, login: str) -> Exception:
    """One sentence for what went wrong, naming the fix."""
    why = _why(stderr)
    low = why.lower()
    if "unauthorized" in low or "authentication required" in low or "denied" in low:
        return HostError(f"{ref.registry} refused access to {ref.familiar} ({why})", login)
    if "manifest unknown" in low or "name unknown" in low or "not found" in low:
        return NotFound(f"{ref.registry} has no image {ref.familiar}")
    if "no image found in manifest list" in low or "no image found in image index" in low:
        return NotFound(f"{ref.familiar} has no linux/amd64 image")
    if "http response to https client" in low:
        return HostError(f"{ref.registry} speaks plain HTTP",
                         f"microbox image pull --insecure {ref.familiar}")
    if any(s in low for s in ("connection refused", "no such host", "i/o timeout",
                              "network is unreachable", "dial tcp")):
        return HostError(f"cannot reach the registry {ref.registry} ({why})")
    return HostError(f"skopeo could not pull {ref.familiar}: {why}")


def copy(ref: Reference, layout: Path, tag: str, layers: Path, *, plain_http: bool,
         authfile: Path | None, on_line: Callable[[str], None], tty: bool) -> None:
    """Copy `ref` into the OCI layout `layout` (tag `tag`), blobs into `layers`."""
    cmd = [_skopeo(), "--policy", str(policy_file()), *PLATFORM, "copy"]
    if plain_http:
        cmd.append("--src-tls-verify=false")
    cmd += ["--src-authfile", str(authfile)] if authfile else ["--src-no-creds"]
    cmd += ["--dest-shared-blob-dir", str(layers), f"docker://{ref.docker}",
            f"oci:{layout}:{tag}"]
    failed = _run(cmd, on_line, tty)
    if failed is not None:
        raise error_for(ref, failed, f"microbox image login {ref.registry}")


def push(layout: Path, tag: str, ref: Reference, *, plain_http: bool, authfile: Path | None,
         digest_file: Path, on_line: Callable[[str], None], tty: bool,
         insecure_fix: str) -> None:
    """Copy the image tagged `tag` in the OCI layout `layout` to the registry as
    `ref` (its manifest's digest, as pushed, into `digest_file`)."""
    cmd = [_skopeo(), "--policy", str(policy_file()), "copy", "--digestfile", str(digest_file)]
    if plain_http:
        cmd.append("--dest-tls-verify=false")
    cmd += ["--dest-authfile", str(authfile)] if authfile else ["--dest-no-creds"]
    cmd += [f"oci:{layout}:{tag}", f"docker://{ref.docker}"]
    failed = _run(cmd, on_line, tty)
    if failed is not None:
        raise push_error_for(ref, failed, f"microbox image login {ref.registry}", insecure_fix)


def push_error_for(ref: Reference, stderr: str, login: str, insecure_fix: str) -> HostError:
    """One sentence for a failed push, naming the fix."""
    why = _why(stderr)
    low = why.lower()
    if "unauthorized" in low or "authentication required" in low or "denied" in low:
        return HostError(f"{ref.registry} refused to let you push {ref.familiar} ({why})", login)
    if "http response to https client" in low:
        return HostError(f"{ref.registry} speaks plain HTTP", insecure_fix)
    if "x509:" in low or "certificate" in low:
        return HostError(f"the TLS certificate of {ref.registry} is not trusted here ({why})",
                         insecure_fix)
    if any(s in low for s in ("connection refused", "no such host", "i/o timeout",
                              "network is unreachable", "dial tcp")):
        return HostError(f"cannot reach the registry {ref.registry} ({why})")
    return HostError(f"skopeo could not push {ref.familiar}: {why}")


def _run(cmd: list[str], on_line: Callable[[str], None], tty: bool) -> str | None:
    """Run skopeo; None when it succeeded, else what it said on stderr."""
    # On a terminal skopeo draws its own per-layer progress bars (on our stderr);
    # otherwise its step lines are relayed. Its own stderr goes to a file: no pipe to fill.
    with tempfile.TemporaryFile("w+") as err:
        with subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                              stdout=sys.stderr.fileno() if tty else subprocess.PIPE,
                              stderr=err, text=True) as proc:
            for line in proc.stdout or ():
                if line.startswith("Copying "):  # the rest is skopeo's signature talk
                    on_line(line.strip())
        if proc.returncode == 0:
            return None
        err.seek(0)
        return err.read()


def login(registry: str, username: str, password: str, authfile: Path, *,
          plain_http: bool) -> None:
    """Check the credentials with the registry and store them in `authfile`."""
    cmd = [_skopeo(), "login", "--authfile", str(authfile), "-u", username, "--password-stdin"]
    if plain_http:
        cmd.append("--tls-verify=false")
    done = subprocess.run([*cmd, registry], input=password, capture_output=True, text=True)
    if done.returncode != 0:
        why = _why(done.stderr)
        low = why.lower()
        if any(w in low for w in ("unauthorized", "401", "invalid username", "denied")):
            raise Refused(f"{registry} rejected the user name or password")
        raise HostError(f"cannot log in to {registry}: {why}")
