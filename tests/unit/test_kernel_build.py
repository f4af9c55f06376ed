"""The kernel build's output handling: every line to the log, progress said as
kbuild compiles, the kept log named when a step fails."""

from __future__ import annotations

import subprocess
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


def test_the_key_covers_each_patch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from microbox.artifacts import kernel

    patches = tmp_path / "patches"
    patches.mkdir()
    fragment = tmp_path / "microbox.config"
    fragment.write_text(kernel.fragment_path().read_text())
    monkeypatch.setattr(kernel, "_beside_or_in_repo", lambda name: [tmp_path / name])
    bare = kernel.cache_key()
    (patches / "0002-b.patch").write_text("--- a/x\n+++ b/x\n")
    (patches / "0001-a.patch").write_text("--- a/y\n+++ b/y\n")
    assert [p.name for p in kernel.patches()] == ["0001-a.patch", "0002-b.patch"]
    with_two = kernel.cache_key()
    (patches / "0002-b.patch").write_text("--- a/x\n+++ b/x\n@@ changed @@\n")
    assert len({bare, with_two, kernel.cache_key()}) == 3


def test_a_wheel_carries_the_patches_where_the_build_looks() -> None:
    """pyproject's force-include puts guest/kernel/ files beside the kernel module,
    the first place _beside_or_in_repo looks: in an installed wheel the patches
    (and the fragment) must be found there, not silently missing from the key."""
    import tomllib

    from microbox.artifacts import kernel

    root = Path(__file__).resolve().parents[2]
    include = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["hatch"]["build"][
        "targets"]["wheel"]["force-include"]
    module_dir = Path(kernel.__file__).resolve().parent.relative_to(root / "src")
    for name in (kernel.PATCHES_NAME, kernel.FRAGMENT_NAME):
        assert include[f"guest/kernel/{name}"] == str(module_dir / name)
    assert kernel.patches() == sorted((root / "guest/kernel/patches").glob("*.patch")) != []


def test_the_key_ignores_the_fragments_comments(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from microbox.artifacts import kernel

    fragment = tmp_path / "microbox.config"
    monkeypatch.setattr(kernel, "_beside_or_in_repo", lambda name: [tmp_path / name])
    fragment.write_text("# one comment\nCONFIG_A=y\n# CONFIG_B is not set\n")
    key = kernel.cache_key()
    fragment.write_text("# another comment\n\nCONFIG_A=y\n# more words\n# CONFIG_B is not set\n")
    assert kernel.cache_key() == key
    fragment.write_text("CONFIG_A=y\nCONFIG_B=y\n")
    assert kernel.cache_key() != key


def test_the_cached_kernel_has_no_symbol_table() -> None:
    """QEMU reads, sorts and keeps an ELF kernel's symbols at every start: the
    cached vmlinux has none (its PVH entry note stays), System.map has them.
    (`make test` builds the kernel before the tests.)"""
    from microbox.artifacts import kernel

    try:
        path = kernel.kernel_path()
    except KernelBuildError:  # no kernel source installed
        pytest.skip("no guest kernel has been built on this host")
    if not path.is_file():
        pytest.skip("no guest kernel has been built on this host")
    sections = subprocess.run(["readelf", "-SW", str(path)], capture_output=True, text=True,
                              check=True).stdout
    assert ".symtab" not in sections and ".text" in sections
    notes = subprocess.run(["readelf", "-nW", str(path)], capture_output=True, text=True,
                           check=True).stdout
    assert "Xen" in notes  # XEN_ELFNOTE_PHYS32_ENTRY: QEMU's PVH boot needs it
    symbols = (path.parent / "System.map").read_text().splitlines()
    assert len(symbols) > 10_000
    assert any(line.endswith(" T startup_64") for line in symbols)
