"""The build cache's lookups: a layer counts only while its whole backing
chain is on disk (a template or base image file removed makes it a miss)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from microbox.build import cache
from microbox.store.images import blob_path


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MICROBOX_HOME", str(tmp_path))
    return tmp_path


def _overlay(backing: Path, fmt: str, out: Path) -> None:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(backing), "-F", fmt,
                    str(out)], check=True)


def test_a_layer_is_found_only_with_its_whole_chain(home: Path) -> None:
    base = blob_path("sha256-base")
    base.parent.mkdir(parents=True)
    base.write_bytes(b"\0" * 65536)
    template = home / "template.qcow2"  # a warm-start template's disk under the first layer
    _overlay(base, "raw", template)
    first = cache.key("", "FROM", "sha256-base")
    second = cache.key(first, "RUN true")
    _overlay(template, "qcow2", cache.layer_path(first))
    assert cache.find(first, "sha256-base") is None  # no .json yet: not in the cache
    cache.record(first, cache.Top("sha256-base"))
    _overlay(cache.layer_path(first), "qcow2", cache.layer_path(second))
    cache.record(second, cache.Top("sha256-base", first))

    assert cache.find(second, "sha256-base") == cache.Top("sha256-base", second)
    assert cache.find(second, "sha256-other") is None  # another base: another chain
    template.unlink()
    assert cache.find(second, "sha256-base") is None and cache.find(first, "sha256-base") is None
    assert len(cache.prune()) == 2 and not list(cache.cache_dir().iterdir())


def test_keys_chain_their_parts() -> None:
    assert cache.key("p", "a", "b") != cache.key("p", "ab")
    assert cache.key("p", "a") != cache.key("q", "a")
    assert cache.key("p", "a") == cache.key("p", "a")
