"""`image push`: the root tar of a throwaway box of the image (the SDK makes the
box and exports it) becomes the one gzip layer of an OCI image whose config is
the image's, and skopeo copies that layout to the registry.

Booting a box writes into its root disk, so the export is not quite the image:
the agent writes /etc/machine-id (the box's id), makes /proc, /sys, /dev, /tmp
and /run when missing, and mounts file systems there (the export stores each
mount point with the metadata of what is mounted on it). Those paths, and
/etc whose mtime the machine-id write may change, are taken back from the
image's own ext4 file (read with `debugfs`, no root needed): as the image has
them, or left out when it has none. An empty /lost+found (made by mke2fs for
every image) is left out too: a pull makes it again. The box has no network
(`net none`), so /etc/resolv.conf is the image's own.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import tarfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from microbox.errors import BuildError, HostError, UsageError
from microbox.images import auth, oci_layout, reference, skopeo
from microbox.images.progress import Progress, human
from microbox.store.images import Image

TAG = "push"
# What the agent's boot may change in the root disk, taken back from the image
# ("." is the root directory, whose mtime changes when /proc... are made).
BOOT_TOUCHED = (".", "etc", "etc/machine-id", "proc", "sys", "dev", "tmp", "run")
LOST_FOUND = "lost+found"
MAX_RESTORED = 64 * 1024  # bytes of a restored regular file (machine-id holds 33)


@dataclass(frozen=True)
class Pushed:
    """What `image push` sent: the manifest the registry holds under `ref`."""

    image: str
    ref: str  # the full reference pushed to (`127.0.0.1:5000/team/app:1`)
    digest: str  # the manifest's digest, as the registry stores it
    config_digest: str
    layer_digest: str
    diff_id: str
    layer_size: int  # compressed bytes
    tar_size: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def target(text: str) -> reference.Reference:
    """The reference to push to: a tag, never a digest (the registry computes that)."""
    ref = reference.parse(text)
    if ref.digest:
        raise UsageError(f"cannot push to a digest ({text}); name a tag, as "
                         f"{ref.registry}/{ref.repository}:TAG")
    return ref


# -- what the image itself holds at the paths booting touches ---------------------


def _debugfs(image: Path, request: str) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(["debugfs", "-c", "-R", request, str(image)],
                              capture_output=True, timeout=60)
    except FileNotFoundError:
        raise HostError("debugfs is missing", "apt-get install -y e2fsprogs") from None


_STAT = {
    "type": re.compile(rb"Type: (\w+)"),
    "mode": re.compile(rb"Mode:\s+([0-7]+)"),
    "uid": re.compile(rb"User:\s+(\d+)"),
    "gid": re.compile(rb"Group:\s+(\d+)"),
    "mtime": re.compile(rb"\bmtime: 0x([0-9a-f]+)(?::([0-9a-f]+))?"),
}
_FAST_LINK = re.compile(rb'Fast link dest: "(.*)"$', re.M)
_TYPES = {b"regular": tarfile.REGTYPE, b"directory": tarfile.DIRTYPE,
          b"symlink": tarfile.SYMTYPE}


class Unsupported(Exception):
    """An entry `image_entry` does not rebuild (a device, a fifo, a big file)."""


def image_entry(image: Path, path: str) -> tuple[tarfile.TarInfo, bytes] | None:
    """The entry at `path` (relative; `.` is the root) in the ext4 file `image`,
    as a tar member and its data, or None if there is none. Unsupported for
    anything but a regular file (up to MAX_RESTORED bytes), a directory or a
    symlink: the caller keeps what the box has there."""
    where = "/" if path == "." else f"/{path}"
    done = _debugfs(image, f"stat {where}")
    found = {k: rx.search(done.stdout) for k, rx in _STAT.items()}
    if done.returncode != 0 or not all(found.values()):
        if b"File not found" in done.stderr + done.stdout:
            return None
        raise BuildError(f"debugfs cannot read {where} in {image.name}: "
                         f"{done.stderr.decode(errors='replace').strip()[-200:]}")
    kind = _TYPES.get(_group(found["type"]))
    if kind is None:
        raise Unsupported(path)
    info = tarfile.TarInfo(path)
    info.type, info.mode = kind, int(_group(found["mode"]), 8) & 0o7777
    info.uid, info.gid = int(_group(found["uid"])), int(_group(found["gid"]))
    info.mtime = _mtime(found["mtime"])
    data = b""
    if kind == tarfile.SYMTYPE:
        fast = _FAST_LINK.search(done.stdout)
        target_bytes = fast.group(1) if fast else _debugfs(image, f"cat {where}").stdout
        info.linkname = target_bytes.decode("utf-8", "surrogateescape")
    elif kind == tarfile.REGTYPE:
        data = _debugfs(image, f"cat {where}").stdout[:MAX_RESTORED + 1]
        if len(data) > MAX_RESTORED:
            raise Unsupported(path)
        info.size = len(data)
    return info, data


def _group(m: re.Match[bytes] | None) -> bytes:
    assert m is not None
    return m.group(1)


def _mtime(m: re.Match[bytes] | None) -> float:
    """ext4's seconds (32 bits, signed) and extra field (2 epoch bits, 30 of ns)."""
    assert m is not None
    low, extra = int(m.group(1), 16), int(m.group(2) or b"0", 16)
    seconds = (low - (1 << 32) if low >= 1 << 31 else low) + ((extra & 3) << 32)
    return seconds + (extra >> 2) / 1e9


# -- the layer ---------------------------------------------------------------------


def _strip(name: str) -> str:
    """A name of the export without its `./` (`.` for the root)."""
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/") or "."


def _members(src: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """The export's members, an empty lost+found left out (read each one's data
    before asking for the next: the tar is a stream)."""
    held: tarfile.TarInfo | None = None
    for member in src:
        name = _strip(member.name)
        if held is not None and name.startswith(LOST_FOUND + "/"):
            yield held
        held = None
        if name == LOST_FOUND and member.isdir():
            held = member  # kept only if something in it follows
            continue
        yield member
    # a lost+found that ends the tar is empty: left out


def write_layer(raw: IO[bytes], image: Path, out: tarfile.TarFile) -> None:
    """Copy the export `raw` into `out`: names without `./` (the root is `./`),
    only extended attributes kept of the PAX records, and what booting touched as
    the image has it (module docstring)."""
    originals = {}
    for path in BOOT_TOUCHED:
        with contextlib.suppress(Unsupported):  # kept as the box has it
            originals[path] = image_entry(image, path)
    with tarfile.open(fileobj=raw, mode="r|") as src:
        for member in _members(src):
            name = _strip(member.name)
            xattrs = {k: v for k, v in member.pax_headers.items()
                      if k.startswith("SCHILY.xattr.")}
            if name in originals:
                original = originals[name]
                if original is not None:  # else made by the agent: left out
                    info, content = original
                    info.pax_headers = xattrs if info.isdir() else {}
                    out.addfile(info, io.BytesIO(content) if info.isreg() else None)
                continue
            member.name, member.pax_headers = name, xattrs  # PAX `path` would win over name
            if member.islnk():
                member.linkname = _strip(member.linkname)
            out.addfile(member, src.extractfile(member) if member.isreg() else None)


# -- the push ----------------------------------------------------------------------

Export = Callable[[IO[bytes]], object]  # writes a box's root tar to the file it is given
JOIN_AFTER_FAILURE = 30.0  # seconds an export gets to notice that its reader has gone


def build_layout(export: Export, image: Image, layout: Path, progress: Progress
                 ) -> oci_layout.Written:
    """The OCI layout of `image` in `layout`: its layer made from the tar that
    `export` writes, read as it is written (the export runs on a thread of its
    own, into a pipe), so the box's walk and the compression overlap and no copy
    of the tar is kept."""
    with _piped(export) as raw, \
            oci_layout.layer(layout, lambda n: progress.advance(n, None)) as (tf, made):
        write_layer(raw, image.path, tf)
    return oci_layout.write_image(layout, made[0], image.config.to_oci(), TAG)


@contextmanager
def _piped(export: Export) -> Iterator[IO[bytes]]:
    """The read end of a pipe that `export` writes into on another thread. The
    export's own failure wins over the reader's (a cut tar is only its effect);
    a reader that fails closes the pipe, which ends the export (a broken pipe)."""
    read_fd, write_fd = os.pipe()
    failed: list[BaseException] = []

    def run() -> None:
        try:
            with open(write_fd, "wb") as w:
                export(w)
        except BaseException as exc:  # handed to the reading thread
            failed.append(exc)

    thread = threading.Thread(target=run, name="image-push-export", daemon=True)
    thread.start()
    try:
        with open(read_fd, "rb") as r:
            yield r
            while r.read(1 << 16):  # what follows the tar's end, so the export ends well
                pass
    except BaseException:
        thread.join(JOIN_AFTER_FAILURE)
        if failed and not isinstance(failed[0], BrokenPipeError):  # not just our going
            raise failed[0] from None
        raise
    thread.join()
    if failed:
        raise failed[0]


def upload(image: Image, written: oci_layout.Written, layout: Path, ref: reference.Reference,
           work: Path, *, insecure: bool, progress: Progress) -> Pushed:
    """Copy the image in `layout` to the registry as `ref`."""
    progress.step(f"pushing {image.name} to {ref.familiar} "
                  f"({human(written.layer.size)} compressed)")
    digest_file = work / "digest"
    skopeo.push(layout, TAG, ref, plain_http=insecure or ref.plain_http,
                authfile=auth.authfile_for(ref.registry), digest_file=digest_file,
                on_line=progress.step, tty=progress.tty,
                insecure_fix=f"microbox image push --insecure {image.name} {ref.familiar}")
    digest = digest_file.read_text().strip() if digest_file.exists() else ""
    return Pushed(image.name, ref.docker, digest or written.manifest_digest,
                  written.config_digest, written.layer.digest, written.layer.diff_id,
                  written.layer.size, written.layer.tar_size)
