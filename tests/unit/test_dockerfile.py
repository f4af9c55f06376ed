"""Dockerfiles into build plans: the line rules (continuations, comments,
directives, heredocs), every instruction's forms, ARG scoping, --target, and
the errors, each naming FILE:LINE."""

from __future__ import annotations

import pytest

from microbox.build.dockerfile import Instruction, Plan, Stage, parse
from microbox.build.model import DEFAULT_PATH, SCRIPT_DIR
from microbox.errors import UsageError
from microbox.images.config import ImageConfig


def plan(text: str, target: str | None = None, **build_args: str) -> Plan:
    return parse(text, build_args=build_args, target=target)


def only(text: str, **build_args: str) -> Stage:
    p = plan(text, **build_args)
    assert len(p.stages) == 1
    return p.stages[0]


def ins(text: str, **build_args: str) -> list[Instruction]:
    return only(text, **build_args).instructions


def fails(text: str, match: str, target: str | None = None, **build_args: str) -> str:
    with pytest.raises(UsageError, match=match) as info:
        parse(text, build_args=build_args, target=target)
    return str(info.value)


# -- lines


def test_continuations_comments_and_line_numbers() -> None:
    text = ("FROM alpine\n"
            "\n"
            "# a comment\n"
            "RUN echo a \\\n"
            "  # a comment inside the instruction\n"
            "  && echo b \\\n"
            "    && echo c\n"
            "run echo d\n")
    first, second = ins(text)
    assert (first.line, first.end_line, second.line) == (4, 7, 8)
    assert first.args == ["echo a   && echo b     && echo c"]
    assert first.original == "RUN echo a   && echo b     && echo c"
    assert second.keyword == "RUN" and second.command == ["/bin/sh", "-c", "echo d"]


def test_empty_continuation_line_is_skipped_with_a_warning() -> None:
    p = plan("FROM alpine\nRUN echo a \\\n\n  b\nUSER x\n")
    run, user = p.stages[0].instructions
    assert run.args == ["echo a   b"] and user.line == 5
    assert any("Dockerfile:2: empty continuation line" in w for w in p.warnings)


def test_escape_directive() -> None:
    text = ("# escape=`\n"
            "FROM alpine\n"
            "ENV A=1\n"
            "RUN dir C:\\ `\n"
            "  && echo x\n"
            "LABEL x=`$A y=$A\n"
            "COPY a\\b C:\\dest\\\n")
    run, label, copy = ins(text)[1:]
    assert run.args == ["dir C:\\   && echo x"]
    assert label.pairs == [("x", "$A"), ("y", "1")]
    assert copy.sources == ["a\\b"]


def test_directives_only_at_the_top() -> None:
    # after a comment, `# escape=` is a comment: the backslash still continues lines
    text = "# hello\n# escape=`\nFROM alpine\nRUN a \\\n  b\n"
    assert ins(text)[0].args == ["a   b"]
    assert ins("# syntax=docker/dockerfile:1\nFROM alpine\nUSER me\n")[0].args == ["me"]
    assert "only one escape parser directive" in fails("# escape=`\n# escape=\\\nFROM a\n",
                                                        "Dockerfile:2:")
    fails("# escape=x\nFROM a\n", "Dockerfile:1: invalid escape token")


def test_instruction_names_are_case_insensitive() -> None:
    stage = only("from alpine as Build\nEnV a=1\nworkdir /x\n")
    assert stage.name == "build"
    assert [i.keyword for i in stage.instructions] == ["ENV", "WORKDIR"]


def test_unknown_instruction_and_empty_file() -> None:
    fails("FROM alpine\nRUN true\nFOO bar\n", "Dockerfile:3: unknown instruction FOO")
    fails("# only a comment\n\n", "has no instructions")
    fails("ARG A=1\n", "has no FROM")
    fails("RUN true\nFROM a\n", "Dockerfile:1: RUN comes before the first FROM")


# -- heredocs


def test_run_heredoc_runs_its_body_in_the_shell() -> None:
    run, user = ins("FROM alpine\nRUN <<EOF\necho hi\necho $HOME\nEOF\nUSER me\n")
    assert run.command == ["/bin/sh", "-c", "echo hi\necho $HOME\n"]
    assert run.heredocs[0].name == "EOF" and (run.line, run.end_line, user.line) == (2, 5, 6)


def test_run_heredoc_with_a_shebang_is_a_script() -> None:
    run = ins("FROM alpine\nRUN <<-EOT\n#!/usr/bin/env python3\n\tprint(1)\n\tEOT\n")[0]
    assert run.script == "#!/usr/bin/env python3\nprint(1)\n"
    assert run.command == [SCRIPT_DIR + "EOT"]
    # BuildKit looks for #! before it strips the tabs: this one goes to the shell
    run = ins("FROM alpine\nRUN <<-EOT\n\t#!/bin/bash\n\techo\n\tEOT\n")[0]
    assert run.script is None and run.command == ["/bin/sh", "-c", "#!/bin/bash\necho\n"]


def test_run_heredoc_feeding_a_command_goes_to_the_shell_whole() -> None:
    run = ins("FROM alpine\nRUN cat <<EOF > /f && cat <<'B' >> /f\na $x\nEOF\nb\nB\n")[0]
    assert [h.name for h in run.heredocs] == ["EOF", "B"]
    assert run.command == ["/bin/sh", "-c",
                           "cat <<EOF > /f && cat <<'B' >> /f\na $x\nEOF\nb\nB"]


def test_copy_heredoc_is_an_inline_file_expanded_unless_quoted() -> None:
    text = ("FROM alpine\nENV NAME=world\n"
            "COPY <<EOF <<-\"RAW\" /etc/\nhello $NAME \"q\"\nEOF\n\tkeep $NAME\n\tRAW\n")
    copy = ins(text)[1]
    assert copy.sources == [] and copy.dest == "/etc/"
    assert [(h.name, h.content) for h in copy.heredocs] == [
        ("EOF", 'hello world "q"\n'), ("RAW", "keep $NAME\n")]
    assert copy.args == ["<<EOF", "<<RAW", "/etc/"]


def test_heredoc_errors() -> None:
    fails("FROM alpine\nRUN <<EOF\necho\n", "Dockerfile:2: unterminated heredoc EOF")
    fails("FROM alpine\nCOPY a <<EOF\nx\nEOF\n", "Dockerfile:2: COPY cannot take a heredoc")


def test_json_form_has_no_heredocs() -> None:
    run = ins('FROM alpine\nRUN ["echo", "<<EOF"]\nUSER x\n')[0]
    assert run.json_form and run.command == ["echo", "<<EOF"] and not run.heredocs


# -- FROM and stages


def test_from_forms() -> None:
    p = plan("ARG TAG=3.20\n"
             "FROM alpine:${TAG} AS base\n"
             "FROM base AS second\n"
             "FROM ghcr.io/o/r@sha256:" + "a" * 64 + "\n"
             "FROM --platform=$BUILDPLATFORM 0\n"
             "COPY --from=second /a /b\n"
             "COPY --from=2 /c /d\n"
             "FROM scratch\n"
             "COPY --from=3 / /\n")
    base, second, pinned, by_index, last = p.stages
    assert (base.base, base.name, base.base_stage) == ("alpine:3.20", "base", None)
    assert (second.base_stage, second.deps) == (0, [0])
    assert pinned.base == "ghcr.io/o/r@sha256:" + "a" * 64
    assert (by_index.base_stage, by_index.platform, by_index.deps) == (0, "linux/amd64",
                                                                       [0, 1, 2])
    assert by_index.instructions[0].from_stage == 1
    assert last.base == "scratch" and last.config.env == {"PATH": DEFAULT_PATH}
    assert p.target is last


def test_from_errors() -> None:
    fails("FROM --platform=linux/arm64 alpine\n", "Dockerfile:1: .*linux/amd64 only")
    fails("FROM alpine AS 1x\n", "Dockerfile:1: stage name '1x'")
    fails("FROM alpine AS a\nFROM busybox AS A\n", "Dockerfile:2: stage name 'a' is already")
    fails("FROM alpine AS\n", "Dockerfile:1: FROM takes an image")
    fails("FROM $NOPE\n", "Dockerfile:1: FROM \\$NOPE expands to an empty name")
    fails("FROM alpine\nCOPY --from=1 /a /b\nFROM alpine\n", "Dockerfile:2: COPY --from=1")
    fails("FROM alpine\nCOPY --from=x$Y /a /b\n", "Dockerfile:2: COPY --from takes no")


def test_copy_from_an_image() -> None:
    copy = ins("FROM alpine\nCOPY --from=nginx:1 /etc/nginx/nginx.conf /n.conf\n")[0]
    assert (copy.from_stage, copy.from_image) == (None, "nginx:1")


# -- ARG scoping


def test_global_args_are_for_from_lines_until_declared_again() -> None:
    text = ("ARG IMG=alpine\nARG V=1\n"
            "FROM $IMG\n"
            "LABEL before=x$V\n"
            "ARG V\n"
            "LABEL after=x$V\n"
            "RUN echo $V\n")
    stage = only(text)
    before, arg, after, run = stage.instructions
    assert stage.base == "alpine"
    assert before.pairs == [("before", "x")] and after.pairs == [("after", "x1")]
    assert arg.args == ["V=1"]
    assert run.build_args == {"V": "1"} and run.env["V"] == "1"
    assert "V" not in stage.config.env  # Docker does not keep ARG values in the image


def test_build_args_override_defaults_everywhere() -> None:
    text = "ARG V=1\nFROM alpine:$V\nARG V\nARG W=default\nRUN x\n"
    stage = only(text, V="9", W="given")
    assert stage.base == "alpine:9"
    assert stage.instructions[-1].build_args == {"V": "9", "W": "given"}


def test_arg_default_sees_env_and_earlier_args() -> None:
    run = ins("FROM alpine\nENV A=1\nARG B=$A-x C=${B}y\nRUN true\n")[-1]
    assert run.build_args == {"B": "1-x", "C": "1-xy"}


def test_arg_without_value_is_in_scope_but_unset() -> None:
    label = ins("FROM alpine\nARG NOVAL\nLABEL v=${NOVAL:-unset}\n")[-1]
    assert label.pairs == [("v", "unset")] and label.build_args == {}


def test_a_stage_built_from_a_stage_inherits_env_and_args() -> None:
    p = plan("FROM alpine AS a\nENV E=1\nARG G=2\nFROM a\nLABEL e=$E g=$G\nRUN true\n")
    label, run = p.stages[1].instructions
    assert label.pairs == [("e", "1"), ("g", "2")]
    assert run.build_args == {"G": "2"} and p.stages[1].config.env["E"] == "1"


def test_platform_args_are_predefined() -> None:
    run = ins("FROM alpine\nARG TARGETARCH\nRUN echo $TARGETARCH\n")[-1]
    assert run.build_args == {"TARGETARCH": "amd64"}


def test_unconsumed_build_args_warn() -> None:
    p = plan("ARG G\nFROM alpine\nARG S\n", G="1", S="2", ZED="3", AAA="4", HTTP_PROXY="p")
    assert "[Warning] One or more build-args [AAA ZED] were not consumed" in p.warnings
    assert plan("FROM alpine\nARG S\n", S="1").warnings == []


# -- --target


def test_target_keeps_the_stage_and_what_it_needs() -> None:
    text = ("FROM alpine AS deps\n"
            "FROM alpine AS unrelated\nRUN --mount=type=cache,target=/x true\n"
            "FROM deps AS build\nCOPY --from=deps /a /a\n"
            "FROM scratch AS tools\n"
            "FROM build AS test\nCOPY --from=tools / /\n"
            "FROM alpine AS final\n")
    p = plan(text, target="test")
    assert [s.name for s in p.stages] == ["deps", "build", "tools", "test"]
    assert [s.index for s in p.stages] == [0, 2, 3, 4]
    assert p.stage(4).deps == [2, 3] and p.target.name == "test"
    # without --target: the last stage and what it needs (BuildKit's rule); the
    # unrelated stage is not walked, so its RUN --mount is no error
    assert [s.name for s in plan(text).stages] == ["final"]
    message = fails(text, "no stage named 'nope'", target="nope")
    assert "deps, unrelated, build, tools, test, final" in message


def test_unknown_target_with_unnamed_stages() -> None:
    fails("FROM alpine\n", "it names no stage", target="x")


# -- instructions


def test_run_forms_and_flags() -> None:
    shell, exec_form, network = ins('FROM alpine\nRUN echo "$HOME"\nRUN ["ls", "-l"]\n'
                                    "RUN --network=none echo offline\n")
    assert shell.command == ["/bin/sh", "-c", 'echo "$HOME"'] and not shell.json_form
    assert exec_form.command == ["ls", "-l"] and exec_form.json_form
    assert network.network == "none" and network.flags == {"network": "none"}
    assert shell.env["PATH"] == DEFAULT_PATH


def test_run_refusals_name_the_line() -> None:
    message = fails("FROM alpine\n\nRUN --mount=type=secret,id=x cat /run/secrets/x\n",
                    "Dockerfile:3: RUN --mount is not supported")
    assert "--build-arg" in message
    fails("FROM alpine\nRUN --security=insecure x\n", "Dockerfile:2: RUN --security")
    fails("FROM alpine\nRUN --network=host x\n", "Dockerfile:2: RUN --network=host")
    fails("FROM alpine\nRUN --bogus x\n", "Dockerfile:2: RUN has no flag --bogus")
    fails("FROM alpine\nRUN [1, 2]\n", "Dockerfile:2: .*strings only")


def test_shell_changes_run_cmd_and_entrypoint() -> None:
    stage = only('FROM alpine\nSHELL ["/bin/bash", "-eo", "pipefail", "-c"]\n'
                 "RUN a | b\nENTRYPOINT exec app\n")
    bash = ["/bin/bash", "-eo", "pipefail", "-c"]
    assert stage.instructions[1].command == [*bash, "a | b"]
    assert stage.config.entrypoint == [*bash, "exec app"] and stage.shell == bash
    fails("FROM alpine\nSHELL /bin/bash -c\n", "Dockerfile:2: SHELL takes a JSON array")


def test_cmd_and_entrypoint() -> None:
    stage = only('FROM alpine\nCMD echo hi\nENTRYPOINT ["/e"]\n')
    assert stage.config.cmd == ["/bin/sh", "-c", "echo hi"]  # set in this stage: kept
    assert stage.config.entrypoint == ["/e"]
    p = plan('FROM alpine\nENTRYPOINT ["/e"]\n').with_base_config(
        0, ImageConfig(cmd=["/bin/sh"]))
    assert p.target.config.cmd == []  # Docker: an ENTRYPOINT drops the base image's Cmd
    assert plan('FROM alpine\nCMD ["a"]\n').target.config.cmd == ["a"]


def test_copy_and_add_forms() -> None:
    text = ("FROM alpine\nARG OWNER=10:20\nWORKDIR /app\n"
            "COPY --chown=$OWNER --chmod=640 --link a.txt b/ ./\n"
            'COPY ["with space.txt", "rel/x"]\n'
            "ADD release.tar.gz /opt\n"
            "COPY . .\n")
    copy, json_copy, add, dot = ins(text)[2:]
    assert (copy.sources, copy.dest, copy.chown, copy.chmod) == (["a.txt", "b/"], "/app/",
                                                                 "10:20", 0o640)
    assert copy.flags == {"chown": "10:20", "chmod": "640", "link": "true"}
    assert json_copy.json_form and json_copy.sources == ["with space.txt"]
    assert json_copy.dest == "/app/rel/x"
    assert add.add and not copy.add and add.dest == "/opt"
    assert dot.dest == "/app/"


@pytest.mark.parametrize(("line", "message"), [
    ("ADD https://example.com/x.tgz /x", "ADD of https://example.com/x.tgz is not supported"),
    ("ADD git@github.com:o/r.git /src", "ADD of git@github.com:o/r.git"),
    ("COPY http://example.com/a /a", "COPY of http://example.com/a"),
    ("COPY --parents a/b /c/", "COPY --parents is not supported"),
    ("COPY --exclude=*.md . /c/", "COPY --exclude is not supported"),
    ("COPY --chmod=u+x a /a", "COPY --chmod=u+x is no octal mode"),
    ("COPY --chmod=17777 a /a", "is no octal mode"),
    ("COPY only-a-source", "COPY needs a source and a destination"),
    ("ADD --checksum=sha256:00 a /a", "ADD --checksum is not supported"),
    ("COPY --chown a /a", "COPY --chown needs a value"),
    ("ONBUILD RUN make", "ONBUILD is not supported"),
    ("ENV ONLYKEY", "ENV ONLYKEY needs a value"),
    ("ENV a=1 b", "ENV word 'b' is no name=value"),
    ("EXPOSE 80/icmp", "EXPOSE '80/icmp' is no port"),
    ("STOPSIGNAL SIGNOPE", "STOPSIGNAL 'SIGNOPE' is no signal"),
    ("HEALTHCHECK --interval=5s", "HEALTHCHECK takes NONE"),
    ("LABEL a=\"open", 'LABEL "open: unexpected end of statement while looking for '
                        "matching double-quote"),
    ("WORKDIR ${X:?is required}", "X: is required"),
])
def test_refusals_name_file_and_line(line: str, message: str) -> None:
    text = f"FROM alpine\nUSER root\n{line}\n"
    with pytest.raises(UsageError) as info:
        parse(text, build_args={}, target=None, path="app/Dockerfile.dev")
    assert str(info.value).startswith("app/Dockerfile.dev:3: ")
    assert message in str(info.value)


def test_env_forms_and_order() -> None:
    stage = only("FROM alpine\nENV A=1\nENV A=2 B=$A C=\"x y\" D=\\$A\nENV LEGACY hello world\n")
    first, second, legacy = stage.instructions
    assert second.pairs == [("A", "2"), ("B", "1"), ("C", "x y"), ("D", "$A")]
    assert legacy.pairs == [("LEGACY", "hello world")]
    assert stage.config.env == {"PATH": DEFAULT_PATH, "A": "2", "B": "1", "C": "x y",
                                "D": "$A", "LEGACY": "hello world"}
    assert first.env == {"PATH": DEFAULT_PATH} and second.env["A"] == "1"


def test_workdir_user_and_base_config() -> None:
    text = "FROM golang\nWORKDIR $GOPATH/src\nWORKDIR app\nWORKDIR ../lib\nUSER ${U:-1000}\n"
    before = plan(text)
    assert before.target.config.workdir == "/src/lib"  # GOPATH unknown until the pull
    after = before.with_base_config(0, ImageConfig(env={"GOPATH": "/go"}, workdir="/w"))
    first, second, third, user = after.target.instructions
    assert (first.workdir, second.workdir, third.workdir) == ("/go/src", "/go/src/app",
                                                              "/go/src/lib")
    assert user.args == ["1000"] and after.target.config.user == "1000"
    assert plan("FROM alpine\nUSER x\nUSER $NOBODY\n").target.config.user is None
    assert after.target.config.env == {"GOPATH": "/go"}
    with pytest.raises(KeyError):
        after.with_base_config(5, ImageConfig())
    with pytest.raises(ValueError, match="not built FROM an image"):
        plan("FROM scratch\n").with_base_config(0, ImageConfig())


def test_metadata_instructions() -> None:
    stage = only("FROM alpine\nENV P=8080\n"
                 "EXPOSE 80 $P/udp 53/UDP 9000-9001\n"
                 "LABEL org.opencontainers.image.title=\"My app\" v=1\n"
                 "MAINTAINER Jane <jane@example.com>\n"
                 "STOPSIGNAL kill\nSTOPSIGNAL SIGRTMIN+3\nSTOPSIGNAL SIGINT\n"
                 'VOLUME ["/data", "/logs"]\nVOLUME /cache\n'
                 "HEALTHCHECK --interval=5s CMD curl -f http://localhost/ || exit 1\n")
    assert stage.ports == ["80/tcp", "8080/udp", "53/udp", "9000-9001/tcp"]
    assert stage.labels == {"org.opencontainers.image.title": "My app", "v": "1",
                            "maintainer": "Jane <jane@example.com>"}
    assert stage.stop_signal == "SIGINT" and stage.volumes == ["/data", "/logs", "/cache"]
    assert stage.healthcheck == ["CMD-SHELL", "curl -f http://localhost/ || exit 1"]
    assert stage.instructions[-1].flags == {"interval": "5s"}
    assert only("FROM alpine\nHEALTHCHECK NONE\n").healthcheck == ["NONE"]


def test_what_microbox_does_not_honour_is_warned_about() -> None:
    p = plan("FROM alpine\nVOLUME /data\nHEALTHCHECK CMD true\nHEALTHCHECK NONE\n")
    assert [w.split(":", 2)[1] for w in p.warnings] == ["2", "3"]
    assert "Dockerfile:2: VOLUME /data is kept in the image config" in p.warnings[0]


# -- cache keys


def test_cache_keys() -> None:
    def run_key(text: str, **build_args: str) -> str:
        return next(i for i in ins(text, **build_args) if i.keyword == "RUN").cache_key

    text = "FROM alpine\nARG V=1\nRUN make\n"
    assert run_key(text) == run_key("FROM alpine\n\n# moved\nARG V=1\nRUN make\n")
    assert run_key(text) != run_key(text, V="2")  # ARG values in scope are in a RUN's key
    assert run_key(text) != run_key("FROM alpine\nARG V=1\nRUN make all\n")
    arg_1, arg_2 = (ins(text, V=v)[0].cache_key for v in ("1", "2"))
    assert arg_1 == arg_2  # a changed value misses at the first RUN, not at the ARG
    copy_a = ins("FROM alpine\nCOPY a /x/\n")[0].cache_key
    assert copy_a != ins("FROM alpine\nCOPY --chmod=600 a /x/\n")[0].cache_key
    assert copy_a != ins("FROM alpine\nCOPY a /y/\n")[0].cache_key
