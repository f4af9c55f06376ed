"""The kernel build's output handling: every line to the log, progress said as
kbuild compiles, the kept log named when a step fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from microbox.artifacts.kernel import Counter, KernelBuildError, _run


def test_progress_lines_count_compiled_files(tmp_path: Path) -> None:
    said: list[str] = []
    counter = Counter(said.append)
    script = "for i in $(seq 1 450); do echo \"  CC      kernel/f$i.o\"; done; echo '  LD  vmlinux'"
    logs = (tmp_path / "build.log", tmp_path / "kept.log")
    _run(["sh", "-c", script], tmp_path, logs, counter.line)
    assert said == ["compiling vmlinux: 200 files compiled",
                    "compiling vmlinux: 400 files compiled"]
    log = logs[0].read_text().splitlines()
    assert log[0].startswith("$ sh -c") and len(log) == 452 and log[-1] == "  LD  vmlinux"


def test_a_failing_step_names_the_kept_log(tmp_path: Path) -> None:
    logs = (tmp_path / "build.log", tmp_path / "kept.log")
    with pytest.raises(KernelBuildError, match=r"kept\.log") as err:
        _run(["sh", "-c", "echo broken; exit 3"], tmp_path, logs)
    assert "exit code 3" in str(err.value) and "broken" in err.value.detail
