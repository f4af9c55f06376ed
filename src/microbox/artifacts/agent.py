"""Building the guest agent (Go, static) and its initramfs into the cache.

The cache key is a hash of the agent's source files, so an edit to the agent
rebuilds it and an unchanged tree costs one hash.
"""

from __future__ import annotations

from pathlib import Path

from microbox import paths
from microbox.artifacts import gobuild
from microbox.artifacts.initramfs import agent_initramfs


def source_dir() -> Path:
    return gobuild.source_dir("agent")


def cache_key() -> str:
    return gobuild.cache_key(source_dir())


def agent_dir() -> Path:
    return paths.cache() / "agent" / cache_key()


def initramfs_path() -> Path:
    return agent_dir() / "initramfs.cpio"


def build_agent(*, force: bool = False) -> Path:
    """Build the agent and its initramfs if missing; returns the initramfs path."""
    out = agent_dir()
    initrd = out / "initramfs.cpio"
    if initrd.exists() and not force:
        return initrd
    gobuild.build(source_dir(), out / "microbox-agent", "the guest agent")
    agent_initramfs(out / "microbox-agent", initrd)
    return initrd
