"""User-mode networking in real boxes (docs/net.md), against stand-in servers
in a network namespace of this host (tests/standin.py): nothing here reaches
beyond the machine. What a box reaches goes through its shim's proxy, which
resolves on the host and decides by the box's policy; what it refuses is
logged and counted; a guest without the proxy reaches nothing; `--net none`
has only lo; and no pipe or shim process outlives its box."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

import microbox
from microbox.core import shim
from microbox.core.boxdir import BoxDir, box_dir
from microbox.net import policy
from tests import standin
from tests.conftest import shim_pids, still_running
from tests.vm.conftest import wait_for
from tests.vm.helpers import mb

GOOD, OTHER, INNER, METADATA = "203.0.113.10", "203.0.113.11", "10.203.0.10", "169.254.169.254"
HOSTS = [f"good.test:{GOOD}", f"other.test:{OTHER}", f"inner.test:{INNER}"]
PROXY_ENV = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A self-signed certificate for good.test (its key beside it)."""
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem"),
                    "-subj", "/CN=good.test", "-addext", "subjectAltName=DNS:good.test"],
                   check=True, capture_output=True)
    return d / "cert.pem"


@pytest.fixture(scope="module")
def servers(cert: Path) -> Iterator[standin.StandIns]:
    why = standin.available()
    if why:
        pytest.skip(why)
    s = standin.start([GOOD, OTHER, INNER, METADATA],
                      cert=(str(cert), str(cert.with_name("key.pem"))))
    yield s
    s.close()


def wget(box: microbox.Box, url: str) -> tuple[int, bytes, bytes]:
    r = box.run(["wget", "-q", "-O", "-", url], timeout=60)  # busybox 1.35's -T segfaults
    return r.exit_code, r.stdout, r.stderr


def tunnel(box: microbox.Box, dest: str, payload: str = "") -> bytes:
    """What the proxy answers a CONNECT to `dest` (then `payload` through it)."""
    script = f"printf 'CONNECT {dest} HTTP/1.1\\r\\n\\r\\n{payload}' | nc 10.0.2.100 3128"
    return box.run(["sh", "-c", script], timeout=60).stdout


def refused(answer: bytes, reason: str) -> bool:
    return answer.startswith(b"HTTP/1.1 403 ") and answer.rstrip().endswith(reason.encode())


def pipes(d: BoxDir) -> set[int]:
    """The -pipe processes QEMU started for the box's proxy connections."""
    found = set()
    for p in psutil.process_iter(["cmdline"]):
        argv = p.info["cmdline"] or []
        if "-pipe" in argv and str(d.proxy_sock) in argv:
            found.add(p.pid)
    return found


def test_allowed_by_name_and_address_others_refused(servers: standin.StandIns) -> None:
    with microbox.Runtime() as rt:
        with rt.boxes.run("busybox", name="pub", add_hosts=HOSTS) as box:  # the default policy
            assert wget(box, "http://good.test/") == (0, f"standin {GOOD}\n".encode(), b"")
            assert wget(box, f"http://{OTHER}/")[:2] == (0, f"standin {OTHER}\n".encode())
            assert box.info().template, "not a warm clone"
        with rt.boxes.run("busybox", name="names", add_hosts=HOSTS,
                          allow_hosts=["good.test"]) as box:
            assert wget(box, "http://good.test/")[:2] == (0, f"standin {GOOD}\n".encode())
            code, _, err = wget(box, "http://other.test/")
            assert code == 1 and b"403 Forbidden" in err
            assert refused(tunnel(box, "other.test:80"), "a name not in --allow-host")
            assert refused(tunnel(box, f"{GOOD}:80"), "an address outside --allow-cidr, and "
                           "only --allow-host names are allowed")
            r = mb("logs", "--net", "names")
            lines = r.stdout.decode().splitlines()
            assert r.returncode == 0 and len(lines) == 3, r
            assert lines[0].endswith(" refused #1 other.test:80: a name not in --allow-host")
            assert " refused #3 203.0.113.10:80: an address outside --allow-cidr" in lines[2]
            assert r.stderr == b"microbox: 3 connection(s) refused\n"
            data = json.loads(mb("logs", "--net", "--json", "names").stdout)["data"]
            assert data["refused"] == 3 and data["log"].count("\n") == 3
            info = json.loads(mb("inspect", "names").stdout)
            assert info["net"]["mode"] == "user" and info["net"]["refused"] == 3
            assert info["net"]["policy"]["allow_hosts"] == ["good.test"]
        with rt.boxes.run("busybox", name="addr", allow_hosts=["good.test"],
                    allow_cidrs=[f"{GOOD}/32"]) as box:
            assert wget(box, f"http://{GOOD}/")[:2] == (0, f"standin {GOOD}\n".encode())
            assert wget(box, f"http://{OTHER}/")[0] == 1


def _host_addresses() -> list[tuple[str, bool]]:
    """The host's IPv4 addresses (not loopback), each with whether a default
    block other than "the host's own" covers it."""
    blocks = [ipaddress.ip_network(c) for c, _ in (*policy.ALWAYS_BLOCKED,
                                                    *policy.PRIVATE_BLOCKED)]
    out = []
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family.name == "AF_INET" and not a.address.startswith("127."):
                ip = ipaddress.ip_address(a.address)
                out.append((a.address, any(ip in b for b in blocks)))
    return out


def test_private_loopback_and_metadata_need_explicit_allows(
        servers: standin.StandIns) -> None:
    with standin.loopback_server() as port, microbox.Runtime() as rt:
        with rt.boxes.run("busybox", add_hosts=HOSTS) as box:
            assert refused(tunnel(box, f"127.0.0.1:{port}"), "loopback")
            assert refused(tunnel(box, f"localhost:{port}"), "loopback")  # resolved on the host
            assert refused(tunnel(box, f"{INNER}:80"), "a private address (RFC 1918)")
            assert refused(tunnel(box, "inner.test:80"), "a private address (RFC 1918)")
            assert refused(tunnel(box, f"{METADATA}:80"), "cloud metadata")
            for addr, in_a_range in _host_addresses():  # the host's own, in any range
                answer = tunnel(box, f"{addr}:22")
                assert answer.startswith(b"HTTP/1.1 403 "), (addr, answer)
                if not in_a_range:
                    assert refused(answer, "an address of the host"), answer
            code, _, err = wget(box, f"http://127.0.0.1:{port}/")
            assert code == 1 and b"403" in err
        with rt.boxes.run("busybox", add_hosts=HOSTS, allow_private=True) as box:
            assert wget(box, f"http://127.0.0.1:{port}/")[:2] == (0, b"standin 127.0.0.1\n")
            assert wget(box, "http://inner.test/")[:2] == (0, f"standin {INNER}\n".encode())
            assert refused(tunnel(box, f"{METADATA}:80"), "cloud metadata")
        with rt.boxes.run("busybox", allow_cidrs=[f"{METADATA}/32"]) as box:
            assert wget(box, f"http://{METADATA}/")[:2] == (0, f"standin {METADATA}\n".encode())
            assert refused(tunnel(box, f"127.0.0.1:{port}"), "loopback")


def test_connect_https_and_absolute_uris_from_python(servers: standin.StandIns,
                                                     cert: Path) -> None:
    script = (
        "import http.client, ssl, urllib.request\n"
        "print(urllib.request.urlopen('http://good.test/', timeout=30).read())\n"
        "c = http.client.HTTPConnection('10.0.2.100', 3128, timeout=30)\n"
        "c.set_tunnel('good.test', 80); c.request('GET', '/'); print(c.getresponse().read())\n"
        "ctx = ssl.create_default_context(cafile='/root/ca.pem')\n"
        "print(urllib.request.urlopen('https://good.test/', context=ctx, timeout=30).read())\n"
    )
    with microbox.Runtime() as rt, rt.boxes.run("debian", add_hosts=HOSTS) as box:
        box.put(cert, "/root/ca.pem")
        r = box.run(["python3", "-c", script], timeout=120)
        want = f"b'standin {GOOD}\\n'\n".encode()
        assert (r.exit_code, r.stdout) == (0, want * 3), r.stderr


def test_a_guest_without_the_proxy_gains_nothing(servers: standin.StandIns) -> None:
    direct = ("unset " + " ".join(PROXY_ENV) + "; for dest in '203.0.113.10 80' '10.0.2.2 22' "
              "'10.0.2.3 53' '203.0.113.10 7'; do nc -w 5 $dest </dev/null && echo reached $dest;"
              " done; true")
    with microbox.Runtime() as rt, rt.boxes.run("busybox", name="nopx", add_hosts=HOSTS) as box:
        env = box.run(["env"]).stdout.decode()
        for key in PROXY_ENV:
            assert f"{key}=http://10.0.2.100:3128\n" in env
        assert "no_proxy=localhost,127.0.0.1\n" in env
        assert box.run(["env"], env={"http_proxy": "http://x:1"}).stdout.count(
            b"http_proxy=http://x:1\n") == 1  # the user's -e wins
        r = box.run(["sh", "-c", direct], timeout=120)
        assert b"reached" not in r.stdout, r.stdout
        assert r.stderr.count(b"Connection refused") == 4, r.stderr
        # through the proxy the same servers answer: the policy, not slirp, decides
        assert wget(box, "http://good.test/")[0] == 0
        # busybox nc through a CONNECT tunnel: bytes both ways, then the end
        answer = tunnel(box, f"{GOOD}:7", "ping")
        assert answer == b"HTTP/1.1 200 Connection established\r\n\r\nping"
        # a shim that was killed comes back with the next client, proxy and all
        first = shim.pid(box_dir(box.record))
        assert first is not None
        os.kill(first, signal.SIGKILL)
        assert not still_running({first}, 5)
        again = rt.boxes.get("nopx")
        assert wget(again, "http://good.test/")[:2] == (0, f"standin {GOOD}\n".encode())
        again.release()


def test_a_lookup_in_a_user_box_fails_at_once(home: Path) -> None:
    """No resolver in a --net user box: a lookup is refused by the guest's own
    loopback (it used to wait 10 s on an address the restricted stack drops)."""
    with microbox.Runtime() as rt, rt.boxes.run("busybox") as box:
        assert box.run(["cat", "/etc/resolv.conf"]).stdout.endswith(b"nameserver 127.0.0.1\n")
        r = box.run(["nslookup", "example.test"], timeout=4)
        assert not r.status.timed_out and r.exit_code not in (0, 127), r  # ran, and failed


def test_net_none_has_only_lo(home: Path) -> None:
    r = mb("run", "--rm", "--net", "none", "busybox", "--", "sh", "-c",
           "ls /sys/class/net; env | grep -ci proxy")
    assert (r.returncode, r.stdout) == (1, b"lo\n0\n"), r  # grep -c found nothing: exit 1
    r = mb("run", "--rm", "busybox", "--", "sh", "-c", "ls /sys/class/net; ip addr show eth0")
    assert r.stdout.startswith(b"eth0\nlo\n") and b"inet 10.0.2.15/24" in r.stdout, r
    assert b"inet6" not in r.stdout, r  # no microbox network carries IPv6 (docs/net.md)


def test_set_changes_a_stopped_box_and_bad_input_makes_nothing(home: Path) -> None:
    assert mb("create", "--name", "s1", "--allow-host", "good.test", "busybox").returncode == 0
    try:
        r = mb("set", "s1", "--net", "none")
        assert r.returncode == 2
        assert r.stderr == (b"microbox: box 's1' has an egress policy (allow_hosts), which "
                            b"--net none would drop; add --reset-policy to drop it.\n")
        assert mb("set", "s1", "--net", "none", "--reset-policy").returncode == 0
        info = json.loads(mb("inspect", "s1").stdout)
        assert info["net"] == {"mode": "none"} and info["spec"]["allow_hosts"] == []
        r = mb("set", "s1", "--allow-cidr", "10.0.0.0/8")
        assert r.returncode == 2 and b"--allow-cidr has no effect with --net none" in r.stderr
        assert mb("set", "s1", "--net", "user", "--deny-all", "--allow-cidr",
                  "10.1.2.3/8").returncode == 0
        pol = json.loads(mb("inspect", "s1").stdout)["net"]["policy"]
        assert pol["deny_all"] is True and pol["allow_cidrs"] == ["10.0.0.0/8"]
    finally:
        mb("rm", "-f", "s1")
    for bad in (["--net", "none", "--allow-private"], ["--allow-cidr", "nonsense"],
                ["--add-host", "x"], ["--net", "bridge"]):
        r = mb("run", "--rm", "--name", "never", *bad, "busybox", "--", "true")
        assert r.returncode == 2 and r.stderr.count(b"\n") == 1, r
    assert b"never" not in mb("ls", "-a").stdout


def test_warm_clones_cold_boots_and_forks_have_networking(servers: standin.StandIns) -> None:
    with microbox.Runtime() as rt:
        with rt.boxes.run("busybox", add_hosts=HOSTS, cold=True) as box:
            assert box.info().template is None
            assert wget(box, "http://good.test/")[0] == 0
        src = rt.boxes.run("busybox", name="forksrc", add_hosts=HOSTS)
        try:
            assert wget(src, "http://good.test/")[0] == 0
            clones = src.fork(1)
            try:
                assert wget(clones[0], "http://good.test/")[:2] == (
                    0, f"standin {GOOD}\n".encode())
            finally:
                for c in clones:
                    c.delete(force=True)
        finally:
            src.close()
        rt.host.gc()


def _hold(box: microbox.Box) -> BoxDir:
    """A connection through the proxy that stays open; returns the box dir once
    its pipe process runs."""
    box.exec(["sh", "-c", f"(printf 'CONNECT {GOOD}:9000 HTTP/1.1\\r\\n\\r\\n'; sleep 1000) "
                          "| nc 10.0.2.100 3128"], detach=True)
    d = box_dir(box.record)
    wait_for(lambda: pipes(d), 60, "the proxy connection's pipe process")
    return d


def test_no_pipe_or_shim_outlives_its_box(home: Path, servers: standin.StandIns) -> None:
    with microbox.Runtime() as rt:
        box = rt.boxes.run("busybox", name="held", rm=False)
        d = _hold(box)
        left = pipes(d) | {shim.pid(d) or 0}
        box.delete(force=True)
        assert not still_running(left, 5)
        box = rt.boxes.run("busybox", name="killed", rm=False)
        d = _hold(box)
        left = pipes(d) | {shim.pid(d) or 0}
        assert box.record.pid is not None
        os.kill(box.record.pid, signal.SIGKILL)
        r = mb("gc")
        assert r.returncode == 0, r
        assert not still_running(left, 5)
        assert not pipes(d) and not still_running(shim_pids(home), 5)
        box.delete(force=True)
