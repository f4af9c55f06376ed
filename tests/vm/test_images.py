"""The busybox image and the content-addressed store."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from tests.vm.helpers import mb


def test_busybox_image_is_content_addressed_and_read_only(home: Path) -> None:
    assert mb("image", "build", "busybox").returncode == 0
    # the session's home may hold other images (debian is every front end's default)
    (img,) = [i for i in json.loads(mb("image", "list", "--json").stdout)["data"]
              if i["name"] == "busybox"]
    assert img["digest"].startswith("sha256-")
    blob = home / "images" / "blobs" / f"{img['digest']}.ext4"
    assert blob.exists() and stat.S_IMODE(blob.stat().st_mode) == 0o444
    r = mb("run", "--rm", "busybox", "--", "sh", "-c",
           "ls -ld /tmp | cut -c1-10; grep ^root: /etc/passwd; ls /bin/sh")
    assert r.stdout.decode().splitlines() == ["drwxrwxrwt", "root:x:0:0:root:/root:/bin/sh",
                                              "/bin/sh"]


def test_unknown_image_names_the_fix() -> None:
    r = mb("run", "--rm", "nosuch", "--", "true")
    assert r.returncode == 1
    assert r.stderr == b"microbox: no image named 'nosuch'; run 'microbox image list'.\n"
