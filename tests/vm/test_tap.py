"""`--net tap` in real boxes (docs/net.md, "--net tap"), against stand-in
servers in a network namespace of this host (tests/standin.py): nothing here
reaches beyond the machine. A tap box is routed by the host through its own
namespace; its firewall chain in `table inet microbox` decides every
address, its resolver every name. The leak guard checks that no namespace,
link or chain outlives a test; here they are also checked after SIGKILL and
gc."""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import signal
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

import microbox
from microbox.core import shim
from microbox.core.boxdir import box_dir
from microbox.net import nft, plan, tap
from tests import standin
from tests.conftest import net_pieces, still_running
from tests.vm.helpers import mb, spawn

GOOD, OTHER, INNER, METADATA = "203.0.113.20", "203.0.113.21", "10.203.0.20", "169.254.169.254"
HOSTS = [f"good.test:{GOOD}", f"other.test:{OTHER}", f"inner.test:{INNER}"]


@pytest.fixture(scope="module")
def servers() -> Iterator[standin.StandIns]:
    why = standin.available()
    if why:
        pytest.skip(why)
    try:
        tap.available()
    except microbox.MicroboxError as exc:
        pytest.skip(str(exc))
    s = standin.start([GOOD, OTHER, INNER, METADATA], name=f"mbtap{os.getpid()}")
    yield s
    s.close()


def wget(box: microbox.Box, url: str) -> tuple[int, bytes, bytes]:
    r = box.run(["wget", "-q", "-O", "-", url], timeout=60)
    return r.exit_code, r.stdout, r.stderr


def reaches(box: microbox.Box, addr: str) -> bool:
    code, out, err = wget(box, f"http://{addr}/")
    assert code == 0 or b"Connection refused" in err, (code, out, err)  # refused, not lost
    return code == 0 and out == f"standin {addr}\n".encode()


def test_policy_by_name_and_address_in_two_boxes(servers: standin.StandIns) -> None:
    with microbox.Runtime() as rt, \
            rt.boxes.run("busybox", name="open", net="tap", add_hosts=HOSTS) as box, \
            rt.boxes.run("busybox", name="names", net="tap", add_hosts=HOSTS,
                   allow_hosts=["good.test"]) as named:
        # the same guest address, gateway and MAC in each box's own namespace
        for b in (box, named):
            out = b.run(["ip", "-o", "addr", "show", "eth0"]).stdout
            assert f"inet {plan.GUEST} " in out.decode()
            assert b.run(["cat", "/etc/resolv.conf"]).stdout.endswith(
                f"nameserver {plan.GATEWAY}\n".encode())
        assert box.info().template and named.info().template, "not warm clones"
        # the default policy: public addresses yes; metadata, private, host no
        assert reaches(box, GOOD) and reaches(box, OTHER)
        assert wget(box, "http://good.test/")[:2] == (0, f"standin {GOOD}\n".encode())
        assert not reaches(box, METADATA) and not reaches(box, INNER)
        host_side = box.info().net["link"]
        assert host_side == nft.link_of(box.record.id)
        # names restricted: what the resolver answered for good.test, nothing else
        assert wget(named, "http://good.test/")[:2] == (0, f"standin {GOOD}\n".encode())
        assert not reaches(named, OTHER)
        r = named.run(["nslookup", "other.test"])
        assert r.exit_code != 0 and b"REFUSED" in r.stdout
        logs = mb("logs", "--net", "names")
        text = logs.stdout.decode()
        assert logs.returncode == 0, logs
        assert "refused #1 other.test (dns): a name not in --allow-host" in text
        assert f"firewall refused 1x tcp {OTHER}:80" in text
        info = json.loads(mb("inspect", "names").stdout)["net"]
        assert info["mode"] == "tap" and info["refused"] >= 2
        assert info["policy"]["allow_hosts"] == ["good.test"]
        assert {"addr": OTHER, "proto": "tcp", "port": 80, "packets": 1} in info["firewall"]


def test_allow_private_and_cidr_and_no_box_reaches_another(servers: standin.StandIns) -> None:
    with microbox.Runtime() as rt, \
            rt.boxes.run("busybox", net="tap", allow_private=True) as priv, \
            rt.boxes.run("busybox", net="tap", allow_cidrs=[f"{METADATA}/32"]) as meta, \
            rt.boxes.run("busybox", net="tap", deny_all=True, allow_cidrs=[f"{OTHER}/32"]) as deny:
        assert reaches(priv, INNER) and not reaches(priv, METADATA)
        assert reaches(meta, METADATA) and not reaches(meta, INNER)
        assert reaches(deny, OTHER) and not reaches(deny, GOOD)
        # another box's namespace answers pings when reached; a ping to a
        # reachable private server shows the check works
        assert pings(priv, INNER)
        other = _ns_address(deny)
        assert not pings(meta, other)  # its private block
        assert not pings(priv, other)  # --allow-private: still no box reaches another


def pings(box: microbox.Box, addr: str) -> bool:
    return box.run(["ping", "-c", "1", "-W", "3", addr], timeout=30).exit_code == 0


def _ns_address(box: microbox.Box) -> str:
    """The box's namespace side of its link (the host side's address + 1)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("256s", nft.link_of(box.record.id).encode())
        addr = fcntl.ioctl(s.fileno(), 0x8915, req)[20:24]  # SIOCGIFADDR
    return str(ipaddress.IPv4Address(addr) + 1)


def test_a_root_guest_changing_its_network_gains_nothing(servers: standin.StandIns) -> None:
    with microbox.Runtime() as rt, \
            rt.boxes.run("busybox", net="tap", allow_hosts=["good.test"], add_hosts=HOSTS) as box:
        script = ("ip addr add 10.0.2.99/24 dev eth0 && "
                  f"ip route add {METADATA}/32 via {plan.GATEWAY} src 10.0.2.99 && "
                  f"ip route add {INNER}/32 via {plan.GATEWAY} && "
                  f"echo 'nameserver {OTHER}' > /etc/resolv.conf")
        assert box.run(["sh", "-c", script]).exit_code == 0
        assert not reaches(box, METADATA) and not reaches(box, INNER)
        assert not reaches(box, OTHER)  # its own resolver choice: no answer, no address
        r = box.run(["nslookup", "good.test", OTHER], timeout=60)
        assert r.exit_code != 0


def test_a_file_from_an_allowed_server_after_the_shim_was_killed(
        servers: standin.StandIns) -> None:
    with microbox.Runtime() as rt, \
            rt.boxes.run("busybox", net="tap", allow_hosts=["good.test"], add_hosts=HOSTS) as box:
        old = shim.pid(box_dir(box.record))
        assert old is not None
        os.kill(old, signal.SIGKILL)
        assert not still_running({old}, 10)
        # the next use starts a new shim, with the box's resolver in its namespace
        r = box.run(["sh", "-c", "wget -q -O /tmp/f http://good.test/bytes/3000000 && "
                                 "wc -c < /tmp/f"], timeout=120)
        assert r.exit_code == 0 and r.stdout.strip() == b"3000000", r


def test_nothing_outlives_sigkill_and_gc(home: Path, servers: standin.StandIns) -> None:
    before = net_pieces()
    with microbox.Runtime() as rt:
        box = rt.boxes.run("busybox", name="killed", net="tap", rm=False)
        d = box_dir(box.record)
        made = net_pieces() - before
        assert {f"netns {tap.netns_name(box.record.id)}",
                f"link {nft.link_of(box.record.id)}",
                f"nft chain {nft.chain_of(box.record.id)}"} <= made, made
        left = {shim.pid(d) or 0}
        assert box.record.pid is not None
        os.kill(box.record.pid, signal.SIGKILL)
        assert not still_running({box.record.pid}, 10)
        r = mb("doctor")
        assert b"box network piece(s) outlived their box" in r.stdout, r
        r = mb("gc")
        assert r.returncode == 0 and b"removed link " + nft.link_of(
            box.record.id).encode() in r.stdout, r
        assert not still_running(left, 5)
        assert net_pieces() - before == set()
        assert b"no stray box namespaces, links or nftables chains" in mb("doctor").stdout
        box.delete(force=True)


def test_bad_input_makes_nothing(home: Path) -> None:
    before = net_pieces()
    for args, words in ((["--net", "tap", "--allow-cidr", "10.0.0.300"], b"bad --allow-cidr"),
                        (["--net", "bogus"], b"--net must be one of user, none, tap")):
        r = mb("create", "--name", "bad", *args, "busybox")
        assert r.returncode == 2 and words in r.stderr, r
        assert mb("inspect", "bad").returncode != 0
    assert net_pieces() == before


def test_forks_of_a_tap_box_each_have_their_own_network(servers: standin.StandIns) -> None:
    with microbox.Runtime() as rt, \
            rt.boxes.run("busybox", name="parent", net="tap", allow_hosts=["good.test"],
                   add_hosts=HOSTS) as box:
        assert wget(box, "http://good.test/")[0] == 0
        clones = box.fork(2)
        try:
            links = {nft.link_of(c.record.id) for c in clones}
            assert len(links) == 2 and nft.link_of(box.record.id) not in links
            for c in clones:
                assert c.info().net["link"] in links
                # the policy came along; the names set is the clone's own, filled anew
                assert wget(c, "http://good.test/")[:2] == (0, f"standin {GOOD}\n".encode())
                assert not reaches(c, OTHER)
        finally:
            for c in clones:
                c.delete(force=True)


def test_boxes_started_at_once_get_links_of_their_own(servers: standin.StandIns) -> None:
    """Four CLI processes start tap boxes at the same moment: each box gets its
    own /31 (allocated under the host-wide lock) and reaches the stand-in."""
    names = [f"par{i}" for i in range(4)]
    procs = [spawn("run", "-d", "--name", n, "--net", "tap", "busybox") for n in names]
    try:
        for p in procs:
            _, err = p.communicate(timeout=300)
            assert p.returncode == 0, err
        with microbox.Runtime() as rt:
            boxes = [rt.boxes.get(n) for n in names]
            addrs = {_ns_address(b) for b in boxes}
            assert len(addrs) == 4, addrs
            for b in boxes:
                assert reaches(b, GOOD)
    finally:
        mb("rm", "-f", *names)
