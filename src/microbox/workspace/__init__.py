"""Workspaces: a git repository's files pushed into a box and committed there as
a base, and what changed in the box since, exported as a patch the host applies
with `git apply` (docs/workspace.md). The modules behind the names below load
on first use.

names.py   where a workspace lives in a box, the ref of its base
files.py   which files of a host repository a push ships, and their tar
guest.py   push and export, as git commands in the box
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from microbox import lazy
from microbox.workspace.names import BASE_REF, DEFAULT_DEST

if TYPE_CHECKING:
    from microbox.workspace.files import WorkspaceFile, repo_root, workspace_files
    from microbox.workspace.guest import WorkspacePush, export, push

_LAZY = {
    "WorkspaceFile": "microbox.workspace.files", "repo_root": "microbox.workspace.files",
    "workspace_files": "microbox.workspace.files", "WorkspacePush": "microbox.workspace.guest",
    "export": "microbox.workspace.guest", "push": "microbox.workspace.guest",
}

__all__ = ["BASE_REF", "DEFAULT_DEST", "WorkspaceFile", "WorkspacePush", "export", "push",
           "repo_root", "workspace_files"]

__getattr__ = lazy.attributes(__name__, _LAZY)
