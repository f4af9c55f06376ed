"""Networking without a VM: the flags are checked before anything is made, the
effective policy the shim reads, the QEMU netdev, the exec defaults, and the
CLI's one-sentence refusals (exit 2, no box)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from microbox.errors import InvalidSpec
from microbox.net import netlog, plan, policy
from microbox.spec import BoxSpec
from microbox.vmm.qemu_argv import UserNet, VMConfig, qemu_argv


def spec(**kw: object) -> BoxSpec:
    return BoxSpec(image="busybox", **kw).validate()  # type: ignore[arg-type]


def test_user_is_the_default_and_lists_become_tuples() -> None:
    s = spec(allow_hosts=["pypi.org"], allow_cidrs="203.0.113.0/24")
    assert s.net == "user"
    assert s.allow_hosts == ("pypi.org",) and s.allow_cidrs == ("203.0.113.0/24",)


@pytest.mark.parametrize("kw,message", [
    ({"net": "bridge"}, "--net must be one of user, none, tap, not 'bridge'"),
    ({"net": "none", "allow_hosts": ["a.org"]},
     "--allow-host has no effect with --net none; drop it, or use --net user"),
    ({"net": "none", "deny_all": True}, "--deny-all has no effect with --net none"),
    ({"net": "none", "allow_private": True}, "--allow-private has no effect"),
    ({"net": "none", "add_hosts": ["a:1.2.3.4"]}, "--add-host has no effect"),
    ({"allow_cidrs": ["10.0.0.0/33"]}, "bad --allow-cidr '10.0.0.0/33': use an address or a "
                                       "range such as 203.0.113.0/24"),
    ({"allow_cidrs": ["pypi.org"]}, "bad --allow-cidr 'pypi.org'"),
    ({"allow_hosts": ["bad name"]}, "bad --allow-host 'bad name': use a host name such as "
                                    "pypi.org, or \\*.pypi.org for the names below it"),
    ({"allow_hosts": ["*"]}, "bad --allow-host"),
    ({"allow_hosts": ["-x.org"]}, "bad --allow-host"),
    ({"allow_hosts": ["10.0.0.1"]}, "--allow-host 10.0.0.1 is an address; use --allow-cidr "
                                    "10.0.0.1 instead"),
    ({"add_hosts": ["nocolon"]}, "bad --add-host 'nocolon': use NAME:ADDRESS"),
    ({"add_hosts": ["a.test:not-an-ip"]}, "bad --add-host"),
])
def test_bad_network_flags(kw: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidSpec, match=message) as err:
        spec(**kw)
    assert err.value.exit_code == 2


def test_effective_policy_by_default() -> None:
    eff = policy.effective(spec())
    assert eff is not None
    assert (eff["version"], eff["deny_all"], eff["allow_hosts"], eff["allow_cidrs"]) == (
        1, False, [], [])
    blocked = {b["cidr"]: b["reason"] for b in eff["block"]}
    for cidr in ("127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                 "100.64.0.0/10", "fc00::/7", "169.254.0.0/16", "fe80::/10", "0.0.0.0/8",
                 "224.0.0.0/4", "ff00::/8", "169.254.169.254/32"):
        assert cidr in blocked
    assert blocked["169.254.169.254/32"] == "cloud metadata"
    assert eff["block"][0]["cidr"] == "169.254.169.254/32"  # before link-local: its own reason
    assert eff["block_host_addresses"] is True
    assert policy.effective(spec(net="none")) is None


def test_allow_private_keeps_metadata_and_normalizes() -> None:
    eff = policy.effective(spec(allow_private=True, allow_hosts=["PyPI.org.", "*.pypi.org"],
                                allow_cidrs=["10.1.2.3/8", "127.0.0.1"],
                                add_hosts=["Mirror.test:10.0.0.5", "mirror.test=fd00::5"]))
    assert eff is not None
    cidrs = [b["cidr"] for b in eff["block"]]
    assert "169.254.169.254/32" in cidrs and "127.0.0.0/8" not in cidrs
    assert "10.0.0.0/8" not in cidrs and eff["block_host_addresses"] is False
    assert eff["allow_hosts"] == ["*.pypi.org", "pypi.org"]
    assert eff["allow_cidrs"] == ["10.0.0.0/8", "127.0.0.1/32"]
    assert eff["hosts"] == {"mirror.test": ["10.0.0.5", "fd00::5"]}


def test_policy_file_is_private_and_removed_for_none(tmp_path: Path) -> None:
    path = tmp_path / "net-policy.json"
    assert policy.write(path, spec(deny_all=True)) == path
    assert path.stat().st_mode & 0o777 == 0o600
    assert json.loads(path.read_text())["deny_all"] is True
    assert policy.write(path, spec(net="none")) is None
    assert not path.exists()


def test_old_specs_had_no_network() -> None:
    """A row, snapshot or pack from before networking restores the same devices."""
    assert BoxSpec.from_json({"image": "busybox"}).net == "none"
    s = spec(allow_hosts=["a.org"])
    assert BoxSpec.from_json(json.loads(json.dumps(s.to_json()))) == s


def test_exec_defaults() -> None:
    env = plan.exec_env("user")
    for key in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        assert env[key] == "http://10.0.2.100:3128"
    assert env["no_proxy"] == "localhost,127.0.0.1"
    assert plan.exec_env("none") == {}
    hosts = " microbox.hosts=host.microbox.internal:10.0.2.2"
    assert plan.boot_parameter("user") == ("microbox.net=eth0,10.0.2.15/24,10.0.2.2 "
                                           "microbox.dns=127.0.0.1" + hosts)
    assert plan.boot_parameter("tap") == ("microbox.net=eth0,10.0.2.15/24,10.0.2.2 "
                                          "microbox.dns=10.0.2.2" + hosts)
    assert plan.boot_parameter("none") == ""


def test_user_netdev_in_the_qemu_argv() -> None:
    net = UserNet(network="10.0.2.0/24", host="10.0.2.2", forward_addr="10.0.2.100",
                  forward_port=3128, command=("/c/microbox-shim", "-pipe", "/h o,me/proxy.sock"))
    argv = qemu_argv(VMConfig(
        qemu="q", accel="tcg", cpus=1, memory_mib=256, kernel=Path("/k"), initrd=Path("/i"),
        disk=Path("/d"), console_log=Path("/c"), qmp_fd=5, port_fds=(6,), user_net=net))
    i = argv.index("-netdev")
    assert argv[i:i + 4] == [
        "-netdev", "user,id=n0,net=10.0.2.0/24,host=10.0.2.2,restrict=on,ipv6=off,"
                   "guestfwd=tcp:10.0.2.100:3128-cmd:/c/microbox-shim -pipe '/h o,,me/proxy.sock'",
        "-device", "virtio-net-device,netdev=n0,guest_announce=off"]
    no_net = qemu_argv(VMConfig(
        qemu="q", accel="tcg", cpus=1, memory_mib=256, kernel=Path("/k"), initrd=Path("/i"),
        disk=Path("/d"), console_log=Path("/c"), qmp_fd=5, port_fds=(6,)))
    assert "-netdev" not in no_net and not any("virtio-net" in a for a in no_net)


def test_refused_count_comes_from_the_last_line(tmp_path: Path) -> None:
    log = tmp_path / "net.log"
    assert netlog.refused(log) == 0
    (tmp_path / "net.log.1").write_bytes(b"t refused #1 a:80: loopback\n")
    log.write_bytes(b"t refused #2 b:80: loopback\nt refused #3 c:80: link-local\n")
    assert netlog.refused(log) == 3
    assert netlog.read(log).count(b"\n") == 3


def _mb(home: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "MICROBOX_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "microbox", *args], capture_output=True,
                          env=env, timeout=60)


@pytest.mark.parametrize("args,message", [
    (["--net", "none", "--allow-host", "pypi.org"],
     b"microbox: --allow-host has no effect with --net none; drop it, or use --net user.\n"),
    (["--allow-cidr", "300.1.2.3/8"],
     b"microbox: bad --allow-cidr '300.1.2.3/8': use an address or a range such as "
     b"203.0.113.0/24.\n"),
    (["--allow-host", "a..b"], b"microbox: bad --allow-host 'a..b'"),
])
def test_cli_refuses_bad_flags_before_anything_is_made(tmp_path: Path, args: list[str],
                                                       message: bytes) -> None:
    for verb in (["run", "--rm", *args, "busybox", "--", "true"], ["create", *args, "busybox"],
                 ["create", *args]):
        r = _mb(tmp_path, *verb)
        assert r.returncode == 2, r.stderr
        assert r.stderr.startswith(message)
    assert not (tmp_path / "boxes").exists() or not any((tmp_path / "boxes").iterdir())
    assert not (tmp_path / "images").exists()
