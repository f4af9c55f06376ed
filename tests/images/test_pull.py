"""`image pull` from real registries on 127.0.0.1 (anonymous, basic auth, bearer
tokens): layers, whiteouts, opaque dirs, ownership, setuid, xattrs, zstd, a
multi-platform index, the layer cache, a killed pull, credentials."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
from pathlib import Path
from typing import Any

from tests.images import ext4
from tests.registry import PASSWORD, USER, Registry
from tests.vm.helpers import CLI, mb


def pull(ref: str, *extra: str) -> dict[str, Any]:
    r = mb("image", "pull", "--json", *extra, ref)
    assert r.returncode == 0, r.stderr.decode()
    data: dict[str, Any] = json.loads(r.stdout)["data"]
    return data


def blob(home: Path, data: dict[str, Any]) -> Path:
    return home / "images" / "blobs" / f"{data['digest']}.ext4"


def test_pull_applies_layers_and_keeps_the_config(own_home: Path,
                                                  registries: dict[str, Registry]) -> None:
    ref = f"{registries['anon'].host}/test/app:1"
    data = pull(ref)
    assert data["name"] == ref and len(data["layers"]) == 3
    assert data["config"]["Entrypoint"] == ["/bin/sh", "-c"]
    assert data["config"]["User"] == "app"
    assert data["config"]["WorkingDir"] == "/home/app/work"
    assert "GREETING=hello from the image" in data["config"]["Env"]
    image = blob(own_home, data)
    assert ext4.clean(image)
    assert stat.S_IMODE(image.stat().st_mode) == 0o444
    root = ext4.ls(image, "/")
    assert "gone.txt" not in root  # whiteout
    assert set(ext4.ls(image, "/opq")) == {"new.txt"}  # opaque dir
    assert root["tmp"].mode & 0o7777 == 0o1777
    home = ext4.ls(image, "/home/app/work")
    mine = home["mine.txt"]
    assert (mine.uid, mine.gid, mine.mode & 0o7777) == (1000, 1000, 0o640)
    assert ext4.ls(image, "/home")["app"].uid == 1000
    assert ext4.ls(image, "/bin")["suid"].mode & 0o7777 == 0o4755
    assert stat.S_ISLNK(ext4.ls(image, "/bin")["sh"].mode)
    assert "user.microbox" in ext4.xattrs(image, "/etc/tagged")
    assert ext4.cat(image, "/home/app/work/mine.txt") == b"owned by app\n"


def test_zstd_layers_and_a_multi_platform_index(own_home: Path,
                                                registries: dict[str, Registry]) -> None:
    host = registries["anon"].host
    z = pull(f"{host}/test/zstd:1")
    assert set(ext4.ls(blob(own_home, z), "/opq")) == {"new.txt"}
    multi = pull(f"{host}/test/multi:1")
    assert ext4.cat(blob(own_home, multi), "/arch") == b"amd64\n"


def test_layers_are_cached_and_shared(own_home: Path, registries: dict[str, Registry]) -> None:
    ref = f"{registries['anon'].host}/test/app:1"
    first = pull(ref)
    layers = {d: (own_home / "images" / "layers" / "sha256" / d[7:]).stat().st_ino
              for d in first["layers"]}
    again = pull(ref)  # same config: same image, nothing fetched or made again
    assert again["digest"] == first["digest"]
    assert mb("image", "rm", ref).returncode == 0
    assert not blob(own_home, first).exists()
    remade = pull(ref)  # layers still cached: only flattened again
    assert remade["digest"] == first["digest"]  # the tree's sha256 names the file
    for digest, ino in layers.items():
        assert (own_home / "images" / "layers" / "sha256" / digest[7:]).stat().st_ino == ino


def test_a_killed_pull_leaves_nothing_and_a_retry_reuses_layers(
        own_home: Path, registries: dict[str, Registry]) -> None:
    ref = f"{registries['anon'].host}/test/app:1"
    p = subprocess.Popen([*CLI, "image", "pull", ref], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, env=os.environ.copy())
    assert p.stderr is not None
    for line in p.stderr:  # kill it once the layers are fetched, mid-way through unpacking
        if b"unpacking layer 2/3" in line:
            p.send_signal(signal.SIGKILL)
            break
    p.wait()
    assert p.returncode == -signal.SIGKILL
    assert not list((own_home / "images" / "blobs").glob("*"))
    r = mb("image", "list", "--json")
    assert json.loads(r.stdout)["data"] == []
    cached = list((own_home / "images" / "layers" / "sha256").iterdir())
    inodes = {f.name: f.stat().st_ino for f in cached}
    data = pull(ref)
    for d in data["layers"]:
        assert (own_home / "images" / "layers" / "sha256" / d[7:]).stat().st_ino == inodes[d[7:]]
    assert [d.name for d in (own_home / "images" / "tmp").iterdir()
            if not d.name.endswith(".lock")] == []  # the killed pull's work dir was swept


def test_basic_auth_needs_login(own_home: Path, registries: dict[str, Registry]) -> None:
    host = registries["basic"].host
    r = mb("image", "pull", f"{host}/test/app:1")
    assert r.returncode == 1
    assert f"run 'microbox image login {host}'" in r.stderr.decode()
    bad = mb("image", "login", host, "-u", USER, "--password-stdin", input=b"wrong\n")
    assert bad.returncode == 1
    assert bad.stderr.decode() == f"microbox: {host} rejected the user name or password.\n"
    ok = mb("image", "login", host, "-u", USER, "--password-stdin", input=PASSWORD.encode())
    assert ok.returncode == 0, ok.stderr
    assert stat.S_IMODE((own_home / "auth.json").stat().st_mode) == 0o600
    assert pull(f"{host}/test/app:1")["config"]["User"] == "app"


def test_docker_config_credentials_are_used(own_home: Path, registries: dict[str, Registry],
                                            tmp_path: Path) -> None:
    import base64

    host = registries["basic"].host
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    (tmp_path / "config.json").write_text(json.dumps({"auths": {host: {"auth": token}}}))
    os.environ["DOCKER_CONFIG"] = str(tmp_path)
    try:
        assert pull(f"{host}/test/zstd:1")["config"]["User"] == "app"
    finally:
        del os.environ["DOCKER_CONFIG"]


def test_bearer_token_registry(own_home: Path, registries: dict[str, Registry]) -> None:
    data = pull(f"{registries['token'].host}/test/app:1")
    assert data["config"]["User"] == "app"


def test_missing_image_and_bad_reference(own_home: Path, registries: dict[str, Registry]) -> None:
    host = registries["anon"].host
    r = mb("image", "pull", f"{host}/test/nope:1")
    assert r.returncode == 1
    assert r.stderr.decode().splitlines()[-1] == (
        f"microbox: {host} has no image {host}/test/nope:1.")
    r = mb("image", "pull", "Bad//Ref")
    assert r.returncode == 2 and "bad image reference" in r.stderr.decode()
    assert not list((own_home / "images" / "blobs").glob("*"))
