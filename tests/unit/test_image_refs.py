"""Image references as Docker reads them, and Docker's rules for an image config."""

from __future__ import annotations

import pytest

from microbox.errors import UsageError
from microbox.images import reference
from microbox.images.config import ImageConfig, apply
from microbox.spec import BoxSpec


@pytest.mark.parametrize(("text", "docker", "familiar"), [
    ("alpine", "docker.io/library/alpine:latest", "alpine:latest"),
    ("alpine:3.20", "docker.io/library/alpine:3.20", "alpine:3.20"),
    ("me/app", "docker.io/me/app:latest", "me/app:latest"),
    ("index.docker.io/library/busybox:1", "docker.io/library/busybox:1", "busybox:1"),
    ("127.0.0.1:5000/test/app:1", "127.0.0.1:5000/test/app:1", "127.0.0.1:5000/test/app:1"),
    ("localhost/app", "localhost/app:latest", "localhost/app:latest"),
    ("ghcr.io/o/r@sha256:" + "a" * 64, "ghcr.io/o/r@sha256:" + "a" * 64,
     "ghcr.io/o/r@sha256:" + "a" * 64),
])
def test_parse(text: str, docker: str, familiar: str) -> None:
    ref = reference.parse(text)
    assert (ref.docker, ref.familiar) == (docker, familiar)


@pytest.mark.parametrize("text", ["", "UPPER/case", "a//b", "a:bad tag", "a@sha256:12"])
def test_bad_references(text: str) -> None:
    with pytest.raises(UsageError, match="bad image reference"):
        reference.parse(text)


def test_loopback_registries_are_plain_http() -> None:
    for host in ("127.0.0.1:5000", "127.1.2.3", "localhost:80", "[::1]:5000"):
        assert reference.is_loopback(host), host
    for host in ("10.0.0.1:5000", "ghcr.io", "docker.io"):
        assert not reference.is_loopback(host), host


def test_only_registry_like_names_are_pulled_by_run() -> None:
    assert reference.looks_remote("127.0.0.1:5000/a") and reference.looks_remote("me/app")
    assert not reference.looks_remote("busybox") and not reference.looks_remote("debian:trixie")


def test_dockers_command_rules() -> None:
    cfg = ImageConfig(entrypoint=["/entry"], cmd=["default", "args"])
    assert cfg.command(None, []) == ["/entry", "default", "args"]
    assert cfg.command(None, ["mine"]) == ["/entry", "mine"]
    assert cfg.command("/other", []) == ["/other"]  # --entrypoint drops the image's Cmd
    assert cfg.command("/other", ["x"]) == ["/other", "x"]
    assert cfg.command("", ["sh"]) == ["sh"]
    assert ImageConfig().command(None, []) == []


def test_image_defaults_under_user_flags() -> None:
    cfg = ImageConfig.from_oci({"Env": ["PATH=/img", "A=1"], "WorkingDir": "/w", "User": "app"})
    spec = apply(cfg, BoxSpec("x", env={"A": "2"}))
    assert (spec.env, spec.workdir, spec.user) == ({"PATH": "/img", "A": "2"}, "/w", "app")
    mine = apply(cfg, BoxSpec("x", workdir="/mine", user="root"))
    assert (mine.workdir, mine.user) == ("/mine", "root")
    assert apply(cfg, spec) == spec  # idempotent
    assert ImageConfig.from_json(cfg.to_json()) == cfg


def test_config_round_trips_labels_ports_and_stop_signal() -> None:
    oci = {"Env": ["A=1"], "Entrypoint": ["/e"], "Cmd": ["c"], "WorkingDir": "/w",
           "User": "app", "Labels": {"org.example": "yes", "n": 1},
           "ExposedPorts": {"8080/tcp": {}, "53/udp": {}}, "StopSignal": "SIGQUIT"}
    cfg = ImageConfig.from_oci(oci)
    assert cfg.labels == {"org.example": "yes", "n": "1"}
    assert cfg.exposed_ports == ("53/udp", "8080/tcp") and cfg.stop_signal == "SIGQUIT"
    assert ImageConfig.from_json(cfg.to_json()) == cfg
    assert ImageConfig.from_oci(cfg.to_oci()) == cfg
    assert cfg.to_oci()["ExposedPorts"] == {"53/udp": {}, "8080/tcp": {}}
    # a row stored before these fields existed, and nulls from a registry
    old = ('{"Cmd": ["c"], "Entrypoint": [], "Env": ["A=1"], "User": "", '
           '"WorkingDir": ""}')
    assert ImageConfig.from_json(old) == ImageConfig(env={"A": "1"}, cmd=["c"])
    assert ImageConfig.from_oci({"Labels": None, "ExposedPorts": None,
                                 "StopSignal": None}) == ImageConfig()


def test_run_without_an_image_means_the_default() -> None:
    from microbox.cli.run import run

    ctx = run.make_context("run", ["--rm", "-e", "A=1", "--name", "n", "--", "sh", "-c", "x"])
    assert ctx.params["image"] == "debian"
    assert ctx.params["command"] == ("--", "sh", "-c", "x")
    ctx = run.make_context("run", ["--rm", "busybox", "--", "true"])
    assert (ctx.params["image"], ctx.params["command"]) == ("busybox", ("--", "true"))
    assert run.make_context("run", ["--rm"]).params["image"] is None  # debian, later
