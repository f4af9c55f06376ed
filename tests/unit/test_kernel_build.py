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


def _fake_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *names: str) -> Path:
    """A /usr/src holding empty tarballs of these names."""
    from microbox.artifacts import kernel

    src = tmp_path / "usr-src"
    src.mkdir()
    for name in names:
        (src / name).write_bytes(b"")
    monkeypatch.setattr(kernel, "SOURCE_DIR", src)
    return src


def _os_release(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, codename: str) -> None:
    from microbox.artifacts import kernel

    path = tmp_path / "os-release"
    path.write_text(f'PRETTY_NAME="Debian GNU/Linux"\nVERSION_CODENAME={codename}\n')
    monkeypatch.setattr(kernel, "OS_RELEASE", path)


def test_the_key_covers_each_patch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from microbox.artifacts import kernel

    patches = tmp_path / "patches" / "6.1"
    patches.mkdir(parents=True)
    fragment = tmp_path / "microbox.config"
    fragment.write_text(kernel.fragment_path().read_text())
    monkeypatch.setattr(kernel, "_beside_or_in_repo", lambda name: [tmp_path / name])
    _fake_sources(tmp_path, monkeypatch, "linux-source-6.1.tar.xz")
    bare = kernel.cache_key()
    (patches / "0002-b.patch").write_text("--- a/x\n+++ b/x\n")
    (patches / "0001-a.patch").write_text("--- a/y\n+++ b/y\n")
    assert [p.name for p in kernel.source().patches()] == ["0001-a.patch", "0002-b.patch"]
    with_two = kernel.cache_key()
    (patches / "0002-b.patch").write_text("--- a/x\n+++ b/x\n@@ changed @@\n")
    assert len({bare, with_two, kernel.cache_key()}) == 3


@pytest.mark.parametrize(("codename", "installed", "chosen"), [
    # Debian 12 with bookworm-backports' 6.12 source beside its own: still 6.1.
    ("bookworm", ("linux-source-6.1.tar.xz", "linux-source-6.12.tar.xz"), "6.1"),
    ("trixie", ("linux-source-6.1.tar.xz", "linux-source-6.12.tar.xz"), "6.12"),
    ("trixie", ("linux-source-6.12.tar.xz",), "6.12"),
    # The release's own source missing: the newest series with a patch set.
    ("bookworm", ("linux-source-6.12.tar.xz",), "6.12"),
    # Not Debian, or a release the repo does not name: the newest supported.
    ("", ("linux-source-6.1.tar.xz", "linux-source-6.12.tar.xz"), "6.12"),
    # A series without a patch set (a newer backports kernel) is never chosen.
    ("trixie", ("linux-source-6.1.tar.xz", "linux-source-6.16.tar.xz"), "6.1"),
])
def test_the_source_is_chosen_by_release_never_by_newest(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, codename: str,
        installed: tuple[str, ...], chosen: str) -> None:
    from microbox.artifacts import kernel

    src = _fake_sources(tmp_path, monkeypatch, *installed)
    _os_release(tmp_path, monkeypatch, codename)
    got = kernel.source()
    assert (got.series, got.tarball) == (chosen, src / f"linux-source-{chosen}.tar.xz")
    assert got.patches() and all(p.parent.name == chosen for p in got.patches())


def test_no_supported_source_names_the_package_of_the_release(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from microbox.artifacts import kernel

    _fake_sources(tmp_path, monkeypatch, "linux-source-6.16.tar.xz")
    _os_release(tmp_path, monkeypatch, "trixie")
    with pytest.raises(KernelBuildError, match=r"apt-get install linux-source-6\.12$"):
        kernel.source()


def test_the_makefile_and_the_build_read_one_release_table() -> None:
    """The Makefile installs linux-source-SERIES of guest/kernel/releases; every
    series named there has a patch set, so the build can use what make installed."""
    from microbox.artifacts import kernel

    root = Path(__file__).resolve().parents[2]
    assert "guest/kernel/releases" in (root / "Makefile").read_text()
    table = kernel.release_series()
    assert table == {"bookworm": "6.1", "trixie": "6.12"}
    assert set(table.values()) <= set(kernel.supported_series())


def test_a_wheel_carries_the_patches_where_the_build_looks() -> None:
    """pyproject's force-include puts guest/kernel/ files beside the kernel module,
    the first place _beside_or_in_repo looks: in an installed wheel the patches,
    the release table and the fragment must be found there, not silently missing
    from the key."""
    import tomllib

    from microbox.artifacts import kernel

    root = Path(__file__).resolve().parents[2]
    include = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["hatch"]["build"][
        "targets"]["wheel"]["force-include"]
    module_dir = Path(kernel.__file__).resolve().parent.relative_to(root / "src")
    for name in (kernel.PATCHES_NAME, kernel.FRAGMENT_NAME, kernel.RELEASES_NAME):
        assert include[f"guest/kernel/{name}"] == str(module_dir / name)
    for series in ("6.1", "6.12"):
        assert kernel.Source(Path("/dev/null"), series).patches() == sorted(
            (root / "guest/kernel/patches" / series).glob("*.patch")) != []


def test_the_key_ignores_the_fragments_comments(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from microbox.artifacts import kernel

    fragment = tmp_path / "microbox.config"
    monkeypatch.setattr(kernel, "_beside_or_in_repo", lambda name: [tmp_path / name])
    (tmp_path / "patches" / "6.1").mkdir(parents=True)
    _fake_sources(tmp_path, monkeypatch, "linux-source-6.1.tar.xz")
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
