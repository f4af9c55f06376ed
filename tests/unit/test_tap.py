"""`--net tap` without a VM: the firewall transaction a policy becomes (checked
by the kernel's nftables with `nft -c`, which applies nothing), the QEMU
netdev, the rtnetlink attribute walk on short input, and the refusal without
root (a real CLI as uid 65534). Real boxes: tests/vm/test_tap.py."""

from __future__ import annotations

import ipaddress
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from microbox.errors import InvalidSpec
from microbox.net import nft, policy, rtnl, tap
from microbox.spec import BoxSpec
from microbox.vmm.qemu_argv import UserNet, VMConfig, qemu_argv

BOX = "0123456789abcdef0123456789abcdef"


def rules(**kw: object) -> nft.Rules:
    effective = policy.effective(BoxSpec(image="busybox", net="user", **kw))  # type: ignore[arg-type]
    assert effective is not None
    return nft.Rules.of(effective)


def covered(addr: str, cidrs: tuple[str, ...]) -> bool:
    return any(ipaddress.ip_address(addr) in ipaddress.ip_network(c) for c in cidrs)


def test_rules_from_the_policy() -> None:
    r = rules()
    assert not r.restricted and r.block_host and r.allow == ()
    assert "10.0.0.0/8" in r.block and covered("169.254.169.254", r.block)
    assert all(":" not in c for c in r.block)  # a tap box has IPv4 only
    r = rules(allow_private=True, allow_hosts=["pypi.org"], allow_cidrs=["203.0.113.7",
                                                                         "2001:db8::/32"])
    assert r.restricted and not r.block_host and r.allow == ("203.0.113.7/32",)
    assert not covered("10.1.2.3", r.block) and r.block.count("169.254.169.254/32") == 1
    assert rules(deny_all=True).restricted


def test_the_box_transaction() -> None:
    text = nft.script_add(BOX, rules(allow_hosts=["pypi.org"]), "10.239.0.0/16",
                          table_exists=False)
    assert text.startswith("\nadd table inet microbox\n")
    c = nft.chain_of(BOX)
    assert c == "b0123456789ab" and nft.names_set(BOX) == f"{c}_names"
    lines = text.splitlines()
    # the order of the box's chain is the policy's order of decision
    body = [ln.split(f"add rule inet microbox {c} ", 1)[1] for ln in lines
            if ln.startswith(f"add rule inet microbox {c} ")]
    assert body == ["meta nfproto ipv6 goto b0123456789ab_refuse",
                    f"ip daddr @{c}_allow accept",
                    f"fib daddr type local goto {c}_refuse",
                    f"ip daddr @{c}_block goto {c}_refuse",
                    f"ip daddr @{c}_names accept",
                    f"goto {c}_refuse",
                    "accept"]
    assert f'add element inet microbox boxes {{ "mbx0123456789ab" : jump {c} }}' in lines
    open_box = nft.script_add(BOX, rules(allow_private=True), "10.239.0.0/16", True)
    assert "add table" not in open_box and "fib daddr" not in open_box
    assert f"@{c}_names" not in open_box.split(f"add chain inet microbox {c}\n")[1]
    assert nft.script_remove(BOX, 0) == "delete table inet microbox\n"
    gone = nft.script_remove(BOX, 2)
    assert gone.startswith('delete element inet microbox boxes { "mbx0123456789ab" }')
    assert f"delete set inet microbox {c}_refused" in gone


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("nft", path="/usr/sbin:/sbin:"
                                                       + os.environ.get("PATH", "")) is None,
                    reason="nft -c needs root and nftables")
def test_nftables_accepts_the_transactions() -> None:
    for r in (rules(), rules(allow_hosts=["a.org"], allow_cidrs=["203.0.113.0/24"]),
              rules(allow_private=True, deny_all=True)):
        text = nft.script_add(BOX, r, "10.239.0.0/16", table_exists=False)
        done = subprocess.run([nft.binary(), "-c", "-f", "-"], input=text, text=True,
                              capture_output=True)
        assert done.returncode == 0, done.stderr


def test_tap_netdev_in_the_qemu_argv() -> None:
    cfg = VMConfig(qemu="q", accel="tcg", cpus=1, memory_mib=256, kernel=Path("k"),
                   initrd=Path("i"), disk=Path("d"), console_log=Path("c"), qmp_fd=3,
                   port_fds=(4,), tap_fd=9)
    argv = qemu_argv(cfg)
    i = argv.index("-netdev")
    assert argv[i:i + 4] == ["-netdev", "tap,id=n0,fd=9,vhost=off",
                             "-device", "virtio-net-device,netdev=n0,guest_announce=off"]
    both = VMConfig(**{**cfg.__dict__, "user_net": UserNet("10.0.2.0/24", "10.0.2.2",
                                                           "10.0.2.100", 3128, ("x",))})
    with pytest.raises(ValueError, match="one network device"):
        qemu_argv(both)


def test_attribute_walk_stops_on_short_or_bad_input() -> None:
    good = struct.pack("HH", 8, 1) + b"\x0a\x00\x00\x01"
    assert list(rtnl._attrs(good)) == [(1, b"\x0a\x00\x00\x01")]
    assert list(rtnl._attrs(good[:6])) == []
    assert list(rtnl._attrs(struct.pack("HH", 2, 1) + b"xxxx")) == []  # length < header
    assert list(rtnl._attrs(struct.pack("HH", 64, 1) + b"xxxx")) == []  # past the end
    nested = struct.pack("HH", 8, 3 | rtnl.NLA_F_NESTED) + b"abcd"
    assert list(rtnl._attrs(nested)) == [(3, b"abcd")]


def test_without_root_one_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    """(The kernel cannot be asked as another user here: the venv's interpreter
    is root's. The check is os.geteuid(), so that is what is changed.) A spec
    says what a box is; whether this host can make it is asked where a box is
    made (lifecycle.create, control.set_spec), before anything exists."""
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(InvalidSpec, match=r"^--net tap needs root \(it makes a network "
                       r"namespace, a TAP device and nftables rules\); run microbox as root, "
                       "or use --net user") as err:
        tap.available()
    assert err.value.exit_code == 2
