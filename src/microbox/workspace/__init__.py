"""Workspaces: a git repository's files pushed into a box and committed there as
a base, and what changed in the box since, exported as a patch the host applies
with `git apply` (docs/workspace.md)."""

from microbox.workspace.files import WorkspaceFile, repo_root, workspace_files
from microbox.workspace.guest import BASE_REF, DEFAULT_DEST, WorkspacePush, export, push

__all__ = ["BASE_REF", "DEFAULT_DEST", "WorkspaceFile", "WorkspacePush", "export", "push",
           "repo_root", "workspace_files"]
