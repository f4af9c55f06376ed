"""`rt.host`: this host's side of microbox: checks, housekeeping, VMMs found
in /proc, and the guest artifacts built for it."""

from __future__ import annotations

import builtins
from pathlib import Path
from typing import TYPE_CHECKING

from microbox import paths
from microbox.errors import BuildError, Refused
from microbox.images.progress import QUIET, Progress
from microbox.sdk.context import Context

if TYPE_CHECKING:
    from microbox.core.doctor import Check
    from microbox.core.maintenance import GcReport
    from microbox.core.orphans import VMM


class Host:
    def __init__(self, ctx: Context) -> None:
        self._rt = ctx

    @staticmethod
    def doctor() -> builtins.list[Check]:
        """Read-only checks of everything microbox depends on."""
        from microbox.core import doctor

        return doctor.run_checks()

    def gc(self, dry_run: bool = False) -> GcReport:
        """Remove what no live box owns: dead --rm boxes, stray box dirs."""
        from microbox.core import maintenance

        return maintenance.gc(self._rt.db, dry_run)

    @staticmethod
    def find_vmm(ref: str) -> VMM:
        """A box's VMM process, found in /proc by the box's id or a unique prefix
        of it (works with the database gone), else by the box's name, which only
        a readable database knows."""
        from microbox.core import orphans
        from microbox.errors import HostError, NotFound
        from microbox.store import readonly

        vmms = orphans.scan()
        try:
            return orphans.match(vmms, ref)
        except NotFound:
            db = paths.database()
            try:
                named = [i for i, name, _ in readonly.box_summaries(db) if name == ref] \
                    if db.exists() else []
            except HostError:  # the database cannot be read: ids still work
                named = []
            if not named:
                raise
        try:
            return orphans.match(vmms, named[0])
        except NotFound:
            raise NotFound(f"box {ref!r} has no running VMM", "microbox list --all") from None

    @staticmethod
    def kill_vmm(target: VMM) -> None:
        """SIGKILL a VMM found by find_vmm, after checking it is still that process."""
        from microbox.core import maintenance

        if not maintenance.kill_vmm(target):
            raise Refused(f"pid {target.pid} is no longer box {target.box_id[:12]}'s VMM; "
                          "nothing was killed")

    def build_kernel(self, *, force: bool = False, progress: Progress = QUIET) -> Path:
        """Build the guest kernel (minutes, once; cached), saying each step."""
        from microbox.artifacts import kernel as kernel_build

        def say(text: str) -> None:
            self._rt.log(text)
            progress.step(text)

        try:
            return kernel_build.build_kernel(force=force, log=say)
        except kernel_build.KernelBuildError as exc:
            raise BuildError(str(exc)) from None

    @staticmethod
    def build_agent(*, force: bool = False) -> Path:
        """The guest agent's initramfs, and the box shim beside it (host side)."""
        from microbox.artifacts import agent as agent_build
        from microbox.artifacts import shim as shim_build

        shim_build.build_shim(force=force)
        return agent_build.build_agent(force=force)
