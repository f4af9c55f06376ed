"""Walk one stage's instructions as Docker dispatches them, keeping the state
they change: the environment (ENV, and ARG values, which RUN sees but the image
config does not keep), the ARGs in scope, WORKDIR, USER, SHELL and the rest of
the image config. Each instruction comes out expanded and resolved
(model.Instruction); every refusal is a UsageError naming FILE:LINE."""

from __future__ import annotations

import copy
import posixpath
import re
from dataclasses import dataclass, field, replace
from signal import Signals

from microbox.build import syntax
from microbox.build.expand import ExpandError, expand, expand_words
from microbox.build.model import DEFAULT_PATH, DEFAULT_SHELL, SCRIPT_DIR, Instruction, Stage
from microbox.build.syntax import Heredoc, RawInstruction, fail
from microbox.images.config import ImageConfig

STRING, BOOL = "string", "bool"
FLAGS: dict[str, dict[str, str]] = {
    "FROM": {"platform": STRING},
    "RUN": {"network": STRING, "mount": STRING, "security": STRING, "device": STRING},
    "COPY": {"from": STRING, "chown": STRING, "chmod": STRING, "link": BOOL,
             "parents": BOOL, "exclude": STRING},
    "ADD": {"chown": STRING, "chmod": STRING, "link": BOOL, "unpack": BOOL,
            "checksum": STRING, "keep-git-dir": BOOL, "exclude": STRING},
    "HEALTHCHECK": {"interval": STRING, "timeout": STRING, "start-period": STRING,
                    "start-interval": STRING, "retries": STRING},
}
# Flags Docker has and microbox build refuses: why, and what to do instead.
REFUSED = {
    "mount": "remove the flag (secrets: pass them with --build-arg)",
    "security": "remove the flag (a build step runs in a microVM of its own)",
    "device": "remove the flag",
    "parents": "name each path to copy instead",
    "exclude": "list the sources to copy, or exclude the files in .dockerignore",
    "checksum": "it is for remote sources, which microbox build does not fetch",
    "keep-git-dir": "it is for git sources, which microbox build does not fetch",
}
_PORT = re.compile(r"(\d+)(?:-(\d+))?(?:/([A-Za-z]+))?\Z")
_RT = re.compile(r"RTM(IN|AX)([+-]\d+)?\Z")
_REMOTE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://|git@[^:/]+:")


@dataclass
class State:
    """What a stage's instructions change, carried into stages built FROM it."""

    env: dict[str, str] = field(default_factory=dict)  # ENV and ARG values: what RUN sees
    image_env: dict[str, str] = field(default_factory=dict)  # ENV only: the image config
    args: dict[str, str | None] = field(default_factory=dict)
    workdir: str | None = None
    user: str | None = None
    shell: list[str] = field(default_factory=lambda: list(DEFAULT_SHELL))
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    cmd_set: bool = False  # a CMD in this stage: ENTRYPOINT keeps it
    labels: dict[str, str] = field(default_factory=dict)
    ports: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    stop_signal: str | None = None
    healthcheck: list[str] | None = None

    @classmethod
    def of_image(cls, config: ImageConfig | None) -> State:
        """The start of a stage FROM an image (None: scratch, or an image whose
        config the executor has not given yet)."""
        if config is None:
            return cls(env={"PATH": DEFAULT_PATH}, image_env={"PATH": DEFAULT_PATH})
        return cls(env=dict(config.env), image_env=dict(config.env), workdir=config.workdir,
                   user=config.user, entrypoint=list(config.entrypoint), cmd=list(config.cmd),
                   labels=dict(config.labels), ports=list(config.exposed_ports),
                   stop_signal=config.stop_signal)

    def child(self) -> State:
        """The start of a stage FROM this one's end."""
        state = copy.deepcopy(self)
        state.cmd_set = False
        return state

    def arg_values(self) -> dict[str, str]:
        return {k: self.env.get(k, v) for k, v in self.args.items() if v is not None}


@dataclass(frozen=True)
class Scope:
    """What every stage's walk reads: the file, the build args, the global
    ARGs, and the stages by name for COPY --from."""

    path: str
    escape: str
    build_args: dict[str, str]
    global_args: dict[str, str]
    names: dict[str, int]


def parse_flags(raw: RawInstruction, path: str) -> dict[str, str]:
    """The instruction's flags by name; unknown, repeated and refused ones fail."""
    known = FLAGS.get(raw.keyword, {})
    out: dict[str, str] = {}
    for text in raw.flags:
        if not text.startswith("--"):
            raise fail(path, raw.line, f"{raw.keyword} flag {text!r} does not start with --")
        name, eq, value = text[2:].partition("=")
        if name not in known:
            raise fail(path, raw.line, f"{raw.keyword} has no flag --{name}")
        if name in REFUSED:
            raise fail(path, raw.line, f"{raw.keyword} --{name} is not supported by microbox "
                       f"build; {REFUSED[name]}")
        if name in out:
            raise fail(path, raw.line, f"{raw.keyword} --{name} is given twice")
        if known[name] == BOOL:
            if eq and value.lower() not in ("true", "false"):
                raise fail(path, raw.line, f"{raw.keyword} --{name} takes true or false, "
                           f"not {value!r}")
            value = value.lower() if eq else "true"
        elif not eq:
            raise fail(path, raw.line, f"{raw.keyword} --{name} needs a value (--{name}=...)")
        out[name] = value
    return out


def key_values(raw: RawInstruction, escape: str, path: str) -> list[tuple[str, str]]:
    """ENV/LABEL pairs, unexpanded: `k=v ...`, or the legacy `k v w` (one pair)."""
    words = syntax.words(raw.rest, escape)
    if not words:
        raise fail(path, raw.line, f"{raw.keyword} needs at least one name=value")
    if "=" not in words[0]:
        parts = re.split(r"[\t\v\f\r ]+", raw.rest.strip(), maxsplit=1)
        if len(parts) < 2:
            raise fail(path, raw.line, f"{raw.keyword} {parts[0]} needs a value "
                       f"({raw.keyword} name=value)")
        return [(parts[0], parts[1])]
    pairs = []
    for word in words:
        key, eq, value = word.partition("=")
        if not eq:
            raise fail(path, raw.line, f"{raw.keyword} word {word!r} is no name=value")
        if not key:
            raise fail(path, raw.line, f"{raw.keyword} names can not be blank")
        pairs.append((key, value))
    return pairs


def arg_words(raw: RawInstruction, escape: str, path: str) -> list[tuple[str, str | None]]:
    """ARG's `name` and `name=default` words (defaults unexpanded)."""
    out: list[tuple[str, str | None]] = []
    for word in syntax.words(raw.rest, escape):
        key, eq, value = word.partition("=")
        if not key:
            raise fail(path, raw.line, "ARG names can not be blank")
        out.append((key, value if eq else None))
    if not out:
        raise fail(path, raw.line, "ARG needs a name")
    return out


def resolve_from(value: str, names: dict[str, int], index: int, path: str,
                 line: int) -> int | None:
    """The stage a COPY --from names (by name or index), or None for an image."""
    if "$" in value:
        raise fail(path, line, "COPY --from takes no variables; name a stage whose FROM "
                   "uses the global ARG instead")
    found = int(value) if value.isdigit() else names.get(value.lower())
    if value.isdigit() and (found is None or found >= index):
        raise fail(path, line, f"COPY --from={value} names no earlier stage")
    if found is not None and found >= index:
        raise fail(path, line, f"COPY --from={value} names this stage or a later one; "
                   "a stage copies from stages before it")
    return found


def walk(index: int, raws: list[RawInstruction], state: State,
         scope: Scope) -> tuple[list[Instruction], set[str], list[str]]:
    """The stage's instructions, resolved; `state` is updated to the stage's end.
    Also returns the ARG names the stage declares, and its warnings."""
    walker = _Walker(index, state, scope)
    return [walker.step(raw) for raw in raws], walker.declared, walker.warnings


def stage_of(state: State, stage: Stage) -> Stage:
    """`stage` with the image config of `state` (the stage's end)."""
    config = ImageConfig(env=dict(state.image_env), entrypoint=list(state.entrypoint),
                         cmd=list(state.cmd), workdir=state.workdir, user=state.user,
                         labels=dict(state.labels),
                         exposed_ports=tuple(sorted(set(state.ports))),
                         stop_signal=state.stop_signal)
    return replace(stage, config=config, labels=dict(state.labels), ports=list(state.ports),
                   volumes=list(state.volumes), stop_signal=state.stop_signal,
                   healthcheck=state.healthcheck, shell=list(state.shell))


class _Walker:
    def __init__(self, index: int, state: State, scope: Scope) -> None:
        self.index = index
        self.st = state
        self.scope = scope
        self.declared: set[str] = set()
        self.warnings: list[str] = []
        self.raw: RawInstruction | None = None
        self.before: dict[str, object] = {}

    def fail(self, sentence: str) -> Exception:
        assert self.raw is not None
        return fail(self.scope.path, self.raw.line, sentence)

    def warn(self, sentence: str) -> None:
        assert self.raw is not None
        self.warnings.append(f"{self.scope.path}:{self.raw.line}: {sentence}")

    def x(self, word: str) -> str:
        """`word` expanded in the environment in effect."""
        try:
            return expand(word, self.st.env, escape=self.scope.escape)
        except ExpandError as e:
            raise self.fail(f"{self.raw.keyword if self.raw else ''} {word}: {e}") from None

    def make(self, args: list[str], **fields: object) -> Instruction:
        """The Instruction, in the state from before it (`self.before`)."""
        raw = self.raw
        assert raw is not None
        values = {**self.before, **fields}
        return Instruction(raw.line, raw.keyword, raw.original, args, end_line=raw.end_line,
                           **values)  # type: ignore[arg-type]

    def json(self, raw: RawInstruction) -> list[str] | None:
        try:
            return syntax.parse_json(raw.rest)
        except ValueError as e:
            raise self.fail(f"{raw.keyword}: {e}") from None

    def step(self, raw: RawInstruction) -> Instruction:
        self.raw = raw
        self.before = dict(env=dict(self.st.env), build_args=self.st.arg_values(),
                           workdir=self.st.workdir or "/", user=self.st.user or "",
                           shell=list(self.st.shell))
        if raw.keyword == "ONBUILD":
            raise self.fail("ONBUILD is not supported by microbox build; put the instructions "
                            "in the stage that needs them")
        flags = parse_flags(raw, self.scope.path)
        if raw.keyword == "ARG":
            return self.arg(raw)
        handler = getattr(self, "do_" + raw.keyword.lower())
        instruction: Instruction = handler(raw, flags)
        return instruction

    # -- instructions that run something

    def do_run(self, raw: RawInstruction, flags: dict[str, str]) -> Instruction:
        network = flags.get("network", "default")
        if network not in ("default", "none"):
            raise self.fail(f"RUN --network={network} is not supported by microbox build; "
                            "use --network=default or --network=none")
        env = dict(self.st.env)
        env.setdefault("PATH", DEFAULT_PATH)
        argv = self.json(raw)
        if argv is not None:
            if not argv:
                raise self.fail("RUN needs a command")
            return self.make(argv, json_form=True, flags=flags, command=argv, env=env,
                             network=network)
        if not raw.rest:
            raise self.fail("RUN needs a command")
        shell, script = list(self.st.shell), None
        command = [*shell, raw.rest]
        if raw.heredocs and syntax.single_heredoc(raw.rest) is not None:
            doc = raw.heredocs[0]
            body = _chomp(doc.content) if doc.chomp else doc.content
            if doc.content.startswith("#!"):  # BuildKit looks before chomping tabs
                script, command = body, [SCRIPT_DIR + doc.name]
            else:
                command = [*shell, body]
        elif raw.heredocs:
            script_text = raw.rest + "".join(f"\n{h.content}{h.name}" for h in raw.heredocs)
            command = [*shell, script_text]
        return self.make([raw.rest], flags=flags, heredocs=list(raw.heredocs),
                         command=command, script=script, env=env, network=network)

    def shell_form(self, raw: RawInstruction) -> tuple[list[str], list[str], bool]:
        """(args, argv, json_form) of CMD/ENTRYPOINT."""
        argv = self.json(raw)
        if argv is not None:
            return argv, argv, True
        if not raw.rest:
            raise self.fail(f"{raw.keyword} needs a command (or [] for none)")
        return [raw.rest], [*self.st.shell, raw.rest], False

    def do_cmd(self, raw: RawInstruction, flags: dict[str, str]) -> Instruction:
        args, argv, js = self.shell_form(raw)
        self.st.cmd, self.st.cmd_set = argv, True
        return self.make(args, json_form=js, command=argv)

    def do_entrypoint(self, raw: RawInstruction, flags: dict[str, str]) -> Instruction:
        args, argv, js = self.shell_form(raw)
        self.st.entrypoint = argv
        if not self.st.cmd_set:  # Docker: an ENTRYPOINT drops the Cmd of the base
            self.st.cmd = []
        return self.make(args, json_form=js, command=argv)

    def do_shell(self, raw: RawInstruction, flags: dict[str, str]) -> Instruction:
        argv = self.json(raw)
        if not argv:
            raise self.fail('SHELL takes a JSON array, e.g. SHELL ["/bin/bash", "-c"]')
        self.st.shell = list(argv)
        return self.make(argv, json_form=True)

    def do_healthcheck(self, raw: RawInstruction, flags: dict[str, str]) -> Instruction:
        kind, rest = [*raw.rest.split(None, 1), "", ""][:2]
        kind, rest = kind.upper(), rest.strip()
        if kind == "NONE" and not rest and not flags:
            test = ["NONE"]
        elif kind == "CMD" and rest:
            argv = syntax.parse_json(rest)
            test = ["CMD", *argv] if argv is not None else ["CMD-SHELL", rest]
        else:
            raise self.fail("HEALTHCHECK takes NONE or [flags] CMD command")
        self.st.healthcheck = test
        if test != ["NONE"]:
            self.warn("HEALTHCHECK is kept in the image config, but microbox runs no health "
                      "checks")
        return self.make(test, flags=flags, command=test[1:])

    # -- instructions that change the config

    def do_env(self, raw: RawInstruction, flags: dict[str, str]) -> Instruction:
        pairs = [(self.x(k), self.x(v)) for k, v in key_values(raw, self.scope.escape,
                                                               self.scope.path)]
        instruction = self.make([f"{k}={v}" for k, v in pairs], pairs=pairs)
        for k, v in pairs:
            self.st.env[k] = self.st.image_env[k] = v
        return instruction

    def do_label(self, raw: RawInstruction, flags: dict[str, str]) -> Instruction:
        pairs = [(self.x(k), self.x(v)) for k, v in key_values(raw, self.scope.escape,
                                                               self.scope.path)]
        self.st.labels.update(pairs)
        return self.make([f"{k}={v}" for k, v in pairs], pairs=pairs)

    def do_maintainer(self, raw: RawInstruction, flags: dict[str, str]) -> Instruction:
        self.st.labels["maintainer"] = raw.rest
        return self.make([raw.rest], pairs=[("maintainer", raw.rest)])

    def arg(self, raw: RawInstruction) -> Instruction:
        """Docker's ARG: a --build-arg wins, then the default (expanded), then
        the global ARG of that name; a value is seen by later words and RUNs."""
        words, pairs = [], []
        for key, default in arg_words(raw, self.scope.escape, self.scope.path):
            value: str | None
            if key in self.scope.build_args:
                value = self.scope.build_args[key]
            elif default is not None:
                value = self.x(default)
            else:
                value = self.scope.global_args.get(key)
            self.declared.add(key)
            self.st.args[key] = value
            if value is not None:
                self.st.env[key] = value
                pairs.append((key, value))
            words.append(key if value is None else f"{key}={value}")
        return self.make(words, pairs=pairs)

    def do_workdir(self, raw: RawInstruction, flags: dict[str, str]) -> Instruction:
        path = self.x(raw.rest)
        if not path:
            raise self.fail("WORKDIR needs a path")
        joined = posixpath.join(self.st.workdir or "/", path)
        self.st.workdir = "/" + posixpath.normpath(joined).lstrip("/")
        return self.make([path], workdir=self.st.workdir)

    def do_user(self, raw: RawInstruction, flags: dict[str, str]) -> Instruction:
        if not raw.rest:
            raise self.fail("USER needs a user (NAME, UID, or with :GROUP)")
        user = self.x(raw.rest)
        self.st.user = user or None
        return self.make([user], user=user)

    def do_expose(self, raw: RawInstruction, flags: dict[str, str]) -> Instruction:
        ports = []
        for word in syntax.split_spaces(raw.rest):
            try:
                expanded = expand_words(word, self.st.env, escape=self.scope.escape)
            except ExpandError as e:
                raise self.fail(f"EXPOSE {word}: {e}") from None
            for port in expanded:
                m = _PORT.match(port)
                proto = (m.group(3) or "tcp").lower() if m else ""
                if not m or proto not in ("tcp", "udp", "sctp"):
                    raise self.fail(f"EXPOSE {port!r} is no port (80, 80/tcp, 53/udp)")
                ports.append(f"{m.group(1)}{'-' + m.group(2) if m.group(2) else ''}/{proto}")
        if not ports:
            raise self.fail("EXPOSE needs a port")
        self.st.ports += [p for p in ports if p not in self.st.ports]
        return self.make(ports)

    def do_volume(self, raw: RawInstruction, flags: dict[str, str]) -> Instruction:
        argv = self.json(raw)
        words = argv if argv is not None else syntax.split_spaces(raw.rest)
        paths = [self.x(w).strip() for w in words]
        if not paths or not all(paths):
            raise self.fail("VOLUME needs a path")
        self.st.volumes += [p for p in paths if p not in self.st.volumes]
        self.warn(f"VOLUME {' '.join(paths)} is kept in the image config, but microbox boxes "
                  "mount no volume for it")
        return self.make(paths, json_form=argv is not None)

    def do_stopsignal(self, raw: RawInstruction, flags: dict[str, str]) -> Instruction:
        signal = self.x(raw.rest)
        name = signal.upper().removeprefix("SIG")
        if not (name.isdigit() or f"SIG{name}" in Signals.__members__ or _RT.match(name)):
            raise self.fail(f"STOPSIGNAL {signal!r} is no signal (SIGTERM, TERM or 15)")
        self.st.stop_signal = signal
        return self.make([signal])

    # -- COPY and ADD

    def do_copy(self, raw: RawInstruction, flags: dict[str, str]) -> Instruction:
        argv = self.json(raw)
        words = argv if argv is not None else syntax.split_spaces(raw.rest)
        if len(words) < 2:
            raise self.fail(f"{raw.keyword} needs a source and a destination")
        docs = {d.name: d for d in raw.heredocs}
        sources, inline = [], []
        for word in words[:-1]:
            name = syntax.single_heredoc(word) if argv is None else None
            if name is not None and name in docs:
                inline.append(self.inline(docs[name]))
                continue
            source = self.x(word)
            if _REMOTE.match(source):
                raise self.fail(f"{raw.keyword} of {source} is not supported by microbox "
                                "build, which does not fetch from the host; download it in a "
                                "RUN step, or next to the Dockerfile")
            sources.append(source)
        if argv is None and syntax.single_heredoc(words[-1]) is not None:
            raise self.fail(f"{raw.keyword} cannot take a heredoc as its destination")
        dest = self.x(words[-1])
        chmod = None
        if "chmod" in flags:
            flags["chmod"] = self.x(flags["chmod"])
            try:
                chmod = int(flags["chmod"], 8)
            except ValueError:
                chmod = -1
            if not 0 <= chmod <= 0o7777:
                raise self.fail(f"{raw.keyword} --chmod={flags['chmod']} is no octal mode "
                                "(0 to 7777)")
        if "chown" in flags:
            flags["chown"] = self.x(flags["chown"])
        from_stage, from_image = None, None
        if "from" in flags:
            from_stage = resolve_from(flags["from"], self.scope.names, self.index,
                                      self.scope.path, raw.line)
            from_image = flags["from"] if from_stage is None else None
        return self.make([*sources, *(f"<<{d.name}" for d in inline), dest],
                         json_form=argv is not None, flags=flags, heredocs=inline,
                         add=raw.keyword == "ADD", sources=sources,
                         dest=destination(self.st.workdir or "/", dest),
                         from_stage=from_stage, from_image=from_image,
                         chown=flags.get("chown") or None, chmod=chmod)

    do_add = do_copy

    def inline(self, doc: Heredoc) -> Heredoc:
        """A COPY heredoc as the file it becomes: tabs chomped, then expanded
        (quotes kept as written) unless its word was quoted."""
        content = _chomp(doc.content) if doc.chomp else doc.content
        if doc.expand:
            try:
                content = expand(content, self.st.env, quotes=False)
            except ExpandError as e:
                raise self.fail(f"heredoc {doc.name}: {e}") from None
        return Heredoc(doc.name, content, doc.expand, doc.chomp)


def destination(workdir: str, dest: str) -> str:
    """COPY's destination made absolute against WORKDIR; a trailing "/" (or
    `.`, `/.`) marks a directory and is kept."""
    is_dir = dest.endswith(("/", "/.")) or dest in ("", ".")
    path = "/" + posixpath.normpath(posixpath.join(workdir, dest)).lstrip("/")
    return path + "/" if is_dir and path != "/" else path


def _chomp(text: str) -> str:
    return re.sub(r"(?m)^\t+", "", text)
