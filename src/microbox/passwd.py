"""A guest's /etc/passwd and /etc/group as the host reads them (bytes from
the guest: untrusted, parsed leniently, never trusted for more than a name's
numbers): the login shell of a user, and the ids a name stands for."""

from __future__ import annotations

LIMIT = 1 << 20  # bytes of /etc/passwd or /etc/group read from a box


def login_shell(passwd: bytes, user: str) -> str:
    """The shell /etc/passwd gives `user` (a name or uid[:gid]); /bin/sh if none."""
    uid = user.split(":", 1)[0]
    for line in passwd.decode(errors="replace").splitlines():
        fields = line.split(":")
        if len(fields) >= 7 and (fields[0] == user or fields[2] == uid):
            shell = fields[6].strip()
            if shell.startswith("/") and not shell.endswith(("/nologin", "/false")):
                return shell
    return "/bin/sh"


def ids(table: bytes, name: str, *, with_gid: bool) -> tuple[int, int] | None:
    """(id, gid) of `name` in /etc/passwd (`with_gid`: its primary group) or
    (id, id) in /etc/group; None if it is not listed."""
    for line in table.decode(errors="replace").splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and fields[0] == name and fields[2].isdigit():
            gid = fields[3] if with_gid and len(fields) > 3 and fields[3].isdigit() \
                else fields[2]
            return int(fields[2]), int(gid)
    return None
