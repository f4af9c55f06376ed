"""`microbox build` and `microbox commit` with real boxes: every instruction,
multi-stage builds, the step cache, failures that leave nothing, commit of a
running box (docs/dockerfile.md)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

import microbox
from microbox.build.builder import StepFailed
from microbox.errors import NotFound, UsageError
from tests.vm.helpers import mb


class Log:
    """A build report that keeps every line (steps and RUN output)."""

    tty = False

    def __init__(self) -> None:
        self.lines: list[str] = []

    def step(self, text: str) -> None:
        self.lines.append(text)

    def advance(self, done: int, total: int | None) -> None:
        pass

    def output(self, data: bytes) -> None:
        self.lines.append(data.decode())

    def ran(self) -> list[str]:
        """The steps that ran (announced, not CACHED), by their text."""
        return [ln.split("] ", 1)[1] for ln in self.lines
                if ln.startswith("#") and "] " in ln and not ln.endswith("CACHED")
                and "FROM" not in ln]


def _context(tmp: Path, dockerfile: str, files: dict[str, str] | None = None) -> Path:
    ctx = tmp / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(dockerfile)
    for name, text in (files or {}).items():
        path = ctx / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return ctx


def _sh(rt: microbox.Runtime, image: str, script: str) -> str:
    with rt.boxes.run(image, ["-c", script], entrypoint="/bin/sh", net="none",
                      user="0") as box:
        res = box.run(box.main)
    assert res.exit_code == 0, res.stderr
    return res.stdout.decode()


EVERY = """\
# a comment
ARG BASE=busybox
FROM ${BASE} AS base
ARG GREETING=hello
ENV A=1 B="two words"
ENV LEGACY value with spaces
LABEL org.example.k="v" other=x
EXPOSE 8080 53/udp
STOPSIGNAL SIGINT
WORKDIR /srv
WORKDIR app
COPY --chown=1000:1000 --chmod=640 data.txt ./
ADD archive.tar /opt/
RUN echo "$GREETING $A $B" > /srv/app/greeting \\
    && echo continued >> /srv/app/greeting
RUN ["/bin/sh", "-c", "echo exec-form > /srv/app/exec"]
RUN <<EOF
echo heredoc > /srv/app/heredoc
EOF
SHELL ["/bin/sh", "-c"]
USER 1000
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat /srv/app/greeting"]
"""


def test_every_instruction(rt: microbox.Runtime, tmp_path: Path) -> None:
    ctx = _context(tmp_path, EVERY, {"data.txt": "data\n"})
    with tarfile.open(ctx / "archive.tar", "w") as tf:
        info = tarfile.TarInfo("pkg/inside.txt")
        info.size, info.uid, info.gid, info.mode = 7, 7, 7, 0o600
        tf.addfile(info, io.BytesIO(b"inside\n"))
    log = Log()
    img = rt.images.build(ctx, tag="every:1", build_args={"GREETING": "hi"}, net="none",
                          progress=log)
    assert img.name == "every:1"
    c = rt.images.get("every:1").config
    assert c.env["A"] == "1" and c.env["B"] == "two words"
    assert c.env["LEGACY"] == "value with spaces" and "GREETING" not in c.env
    assert c.workdir == "/srv/app" and c.user == "1000"
    assert c.entrypoint == ["/bin/sh", "-c"] and c.cmd == ["cat /srv/app/greeting"]
    assert c.labels == {"org.example.k": "v", "other": "x"}
    assert sorted(c.exposed_ports) == ["53/udp", "8080/tcp"]
    assert c.stop_signal == "SIGINT"
    out = _sh(rt, "every:1", "cat /srv/app/greeting /srv/app/exec /srv/app/heredoc; "
              "stat -c '%u:%g %a' /srv/app/data.txt /opt/pkg/inside.txt; "
              "cat /opt/pkg/inside.txt")
    assert out.splitlines() == ["hi 1 two words", "continued", "exec-form", "heredoc",
                                "1000:1000 640", "7:7 600", "inside"]
    # the image runs its ENTRYPOINT + CMD
    with rt.boxes.run("every:1", net="none") as box:
        assert box.run(box.main).stdout == b"hi 1 two words\ncontinued\n"
        assert box.run(["id", "-u"]).stdout == b"1000\n"  # USER, in WORKDIR
        assert box.run(["pwd"]).stdout == b"/srv/app\n"


MULTI = """\
FROM busybox AS builder
RUN mkdir -p /out && echo built > /out/artifact && ln -s artifact /out/link
FROM busybox AS unused
RUN exit 9
FROM busybox
COPY --from=builder /out /app
COPY --from=builder /out/artifact /single
CMD ["cat", "/app/artifact"]
"""


def test_multi_stage_copy_from_and_target(rt: microbox.Runtime, tmp_path: Path) -> None:
    ctx = _context(tmp_path, MULTI)
    log = Log()
    rt.images.build(ctx, tag="multi", net="none", progress=log)
    assert not any("exit 9" in s for s in log.ran())  # no stage needs `unused`
    assert _sh(rt, "multi", "cat /app/artifact /single; readlink /app/link") == \
        "built\nbuilt\nartifact\n"
    rt.images.build(ctx, tag="multi-builder", target="builder", net="none")
    assert _sh(rt, "multi-builder", "cat /out/artifact") == "built\n"
    with pytest.raises(UsageError, match="builder"):
        rt.images.build(ctx, tag="x", target="nosuch", net="none")


CACHED = """\
FROM busybox
ENV STEP=1
WORKDIR /w
RUN date +%s%N > /w/first
COPY tree/ /w/tree/
RUN date +%s%N > /w/second
CMD ["cat", "/w/first"]
"""


def test_cache_reruns_only_from_the_changed_copy(rt: microbox.Runtime,
                                                 tmp_path: Path) -> None:
    ctx = _context(tmp_path, CACHED, {"tree/a.txt": "a\n", "tree/sub/b.txt": "b\n"})
    log = Log()
    first = rt.images.build(ctx, tag="cached", net="none", progress=log)
    assert len(log.ran()) == 4  # WORKDIR, RUN, COPY, RUN
    before = _sh(rt, "cached", "cat /w/first /w/second")

    again = Log()
    second = rt.images.build(ctx, tag="cached", net="none", progress=again)
    assert again.ran() == [] and second.digest == first.digest

    (ctx / "tree" / "a.txt").touch()  # a new mtime only: Docker's cache ignores it
    rt.images.build(ctx, tag="cached", net="none", progress=(mtime := Log()))
    assert mtime.ran() == []

    (ctx / "tree" / "sub" / "b.txt").write_text("changed\n")
    changed = Log()
    rt.images.build(ctx, tag="cached", net="none", progress=changed)
    assert changed.ran() == ["COPY tree/ /w/tree/", "RUN date +%s%N > /w/second"]
    after = _sh(rt, "cached", "cat /w/first /w/second /w/tree/sub/b.txt").splitlines()
    assert after[0] == before.splitlines()[0]  # the first RUN's layer was reused
    assert after[1] != before.splitlines()[1] and after[2] == "changed"

    (ctx / ".dockerignore").write_text("tree/sub\n")
    rt.images.build(ctx, tag="ignored", net="none")
    assert _sh(rt, "ignored", "ls /w/tree") == "a.txt\n"


def test_a_failing_run_exits_with_its_code_and_leaves_nothing(rt: microbox.Runtime,
                                                              tmp_path: Path) -> None:
    ctx = _context(tmp_path, "FROM busybox\nRUN echo ok > /f\nRUN echo failing; exit 3\n")
    log = Log()
    with pytest.raises(StepFailed) as err:
        rt.images.build(ctx, tag="broken", net="none", progress=log)
    assert err.value.exit_code == 3 and "Dockerfile:3" in str(err.value)
    assert any("failing" in ln for ln in log.lines)
    with pytest.raises(NotFound):
        rt.images.get("broken")
    assert rt.boxes.list(all=True) == []
    done = mb("build", "-t", "broken", "--net", "none", str(ctx))
    assert done.returncode == 3
    assert b"Dockerfile:3" in done.stderr and b"exited with code 3" in done.stderr


@pytest.mark.parametrize("text, match", [
    ("FROM busybox\nFROBNICATE x\n", "Dockerfile:2"),
    ("FROM busybox\nRUN --mount=type=secret,id=x cat /x\n", "Dockerfile:2.*--mount"),
    ("FROM busybox\nADD https://example.com/x /x\n", "Dockerfile:2"),
    ("FROM busybox\nCOPY missing.txt /x\n", "missing.txt"),
])
def test_bad_dockerfiles_fail_naming_the_line(rt: microbox.Runtime, tmp_path: Path,
                                               text: str, match: str) -> None:
    ctx = _context(tmp_path, text)
    with pytest.raises(UsageError, match=match):
        rt.images.build(ctx, tag="bad", net="none")
    assert rt.boxes.list(all=True) == []
    with pytest.raises(NotFound):
        rt.images.get("bad")


def test_commit_of_a_running_box(rt: microbox.Runtime) -> None:
    box = rt.boxes.run("busybox", detach=True, net="none", name="to-commit",
                       env={"FROM_BOX": "yes"})
    try:
        box = rt.boxes.get("to-commit")
        assert box.run(["/bin/sh", "-c", "echo committed > /data; echo live > /tmp/x"]
                       ).exit_code == 0
        img = box.commit("committed:v1", changes=['CMD ["cat", "/data"]', "LABEL k=v"])
        assert box.reload().status == "running"  # left as it was
        assert box.run(["cat", "/tmp/x"]).stdout == b"live\n"
        assert img.config.cmd == ["cat", "/data"] and img.config.labels == {"k": "v"}
        assert img.config.env["FROM_BOX"] == "yes"
        with rt.boxes.run("committed:v1", net="none") as copy:
            assert copy.run(copy.main).stdout == b"committed\n"
        with pytest.raises(UsageError, match="RUN"):
            box.commit("nope", changes=["RUN true"])
    finally:
        rt.boxes.get("to-commit").delete(force=True)
    done = mb("commit", "--json", "no-such-box", "x")
    assert done.returncode == 1 and json.loads(done.stdout)["error"]["type"] == "not_found"


def test_a_built_image_pushes_and_pulls_back_equal(rt: microbox.Runtime, tmp_path: Path,
                                                   registries: dict[str, Any]) -> None:
    ctx = _context(tmp_path, "FROM busybox\nLABEL made=by-build\nEXPOSE 8080\n"
                   "COPY --chown=5:6 --chmod=600 secret.txt /etc/secret.txt\n"
                   "RUN ln -s /etc/secret.txt /link && mkdir -m 1777 /shared\n"
                   "ENTRYPOINT [\"/bin/sh\", \"-c\"]\nCMD [\"cat /etc/secret.txt\"]\n",
                   {"secret.txt": "s3cret\n"})
    built = rt.images.build(ctx, tag="to-push", net="none")
    ref = f"{registries['anon'].host}/built/to-push:1"
    rt.images.push("to-push", ref)
    back = rt.images.pull(ref)
    assert back.config == built.config and back.config.labels == {"made": "by-build"}
    listing = "stat -c '%n %u:%g %a %F' /etc/secret.txt /link /shared; cat /etc/secret.txt"
    assert _sh(rt, back.name, listing) == _sh(rt, "to-push", listing)
    assert "/etc/secret.txt 5:6 600 regular file" in _sh(rt, back.name, listing)
