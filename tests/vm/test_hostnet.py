"""Host services by name and trusted CAs in real boxes (docs/net.md, "Host
services" and "Trusted CAs"), against stand-ins on this host
(tests/hostservices.py): an HTTPS server on 127.0.0.1 whose certificate
comes from a CA the test made, and an upstream CONNECT proxy. Nothing here
reaches beyond the machine."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

import microbox
from microbox.core.boxdir import box_dir
from microbox.net import cacerts, tap
from microbox.store import boxes
from tests import hostservices
from tests.vm.helpers import mb

HOST = "host.microbox.internal"
FLAG = "which only --allow-private allows"
NAMES = [HOST, "upstream.test", "direct.test"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return hostservices.make_ca(tmp_path_factory.mktemp("pki"), NAMES)


@pytest.fixture(scope="module")
def server(pki: tuple[Path, Path, Path]) -> Iterator[hostservices.HTTPSServer]:
    s = hostservices.HTTPSServer(pki[1], pki[2])
    yield s
    s.close()


def sh(box: microbox.Box, script: str) -> tuple[int, str, str]:
    r = box.run(["sh", "-c", script], timeout=120)
    return r.exit_code, r.stdout.decode(), r.stderr.decode()


def test_a_box_reaches_the_host_by_name_and_trusts_the_ca_it_was_given(
        rt: microbox.Runtime, pki: tuple[Path, Path, Path],
        server: hostservices.HTTPSServer) -> None:
    url = f"https://{HOST}:{server.port}/"
    with rt.boxes.run("debian", allow_private=True, ca_certs=[pki[0]], rm=True) as box:
        code, out, _ = sh(box, f"getent hosts {HOST}")
        assert code == 0 and out.split() == ["10.0.2.2", HOST]
        # curl trusts the image's bundle, which now ends with the CA
        code, out, err = sh(box, f"curl -sS {url}")
        assert (code, out) == (0, hostservices.BODY.decode()), err
        # Python trusts SSL_CERT_FILE; every exec names the bundles
        code, out, err = sh(box, f"python3 -c 'import urllib.request; print(urllib.request"
                                 f".urlopen(\"{url}\").read().decode(), end=\"\")'")
        assert (code, out) == (0, hostservices.BODY.decode()), err
        code, out, _ = sh(box, "env")
        env = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        assert {k: env.get(k) for k in cacerts.exec_env(True)} == cacerts.exec_env(True)
        box.stop()
        box.start()  # installed again, not twice
        code, out, err = sh(box, f"curl -sS {url} && grep -c 'microbox: added CAs' "
                                 "/etc/ssl/certs/ca-certificates.crt")
        assert (code, out) == (0, hostservices.BODY.decode() + "1\n"), err


def test_without_the_ca_verification_fails_and_without_allow_private_the_flag_is_named(
        rt: microbox.Runtime, server: hostservices.HTTPSServer) -> None:
    url = f"https://{HOST}:{server.port}/"
    with rt.boxes.run("debian", allow_private=True, rm=True) as box:
        code, _, err = sh(box, f"curl -sS {url}")
        assert code == 60 and "certificate" in err  # curl: SSL certificate problem
    with rt.boxes.run("debian", rm=True) as box:
        code, out, _ = sh(box, f"getent hosts {HOST}")
        assert code == 0 and out.split()[0] == "10.0.2.2"  # the name resolves
        code, _, err = sh(box, f"python3 -c 'import urllib.request; urllib.request"
                               f".urlopen(\"{url}\")'")
        assert code == 1 and "Tunnel connection failed: 403" in err and FLAG in err
        code, out, _ = sh(box, f"curl -s http://{HOST}:{server.port}/")
        assert FLAG in out  # a plain-HTTP request gets the reason as its body
        log = box.net_log().decode()
        assert f"{HOST}:{server.port}: the host's loopback ({HOST}), {FLAG}" in log


def test_the_egress_proxy_dials_through_the_hosts_proxy_after_deciding(
        rt: microbox.Runtime, pki: tuple[Path, Path, Path], server: hostservices.HTTPSServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    up = hostservices.Upstream(("127.0.0.1", server.port))
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{up.port}")
    monkeypatch.setenv("no_proxy", "direct.test")
    try:
        with rt.boxes.run("debian", allow_private=True, ca_certs=[pki[0]], rm=True,
                          add_hosts=["direct.test:127.0.0.1", "meta.test:169.254.169.254"]
                          ) as box:
            body = hostservices.BODY.decode()
            # a name the host cannot resolve: the host's proxy is asked, by name
            assert sh(box, "curl -sS https://upstream.test/")[:2] == (0, body)
            # NO_PROXY, and the host itself: dialed directly
            assert sh(box, f"curl -sS https://direct.test:{server.port}/")[:2] == (0, body)
            assert sh(box, f"curl -sS https://{HOST}:{server.port}/")[:2] == (0, body)
            # refused by the box's policy: the host's proxy never hears of them
            for url in ("https://169.254.169.254/", "https://meta.test/"):
                code, _, err = sh(box, f"curl -sS {url}")
                assert code == 56 and "403" in err, (url, err)
        assert up.seen == ["CONNECT upstream.test:443 HTTP/1.1"]
    finally:
        up.close()


def test_pooled_and_bundleless_boxes_get_the_cas(
        rt: microbox.Runtime, pki: tuple[Path, Path, Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    pem = pki[0].read_text()
    rt.pools.add("busybox", size=1)
    spares = {r.id for r in boxes.spares(rt.db)}
    with rt.boxes.run("busybox", ca_certs=[str(pki[0])], rm=True) as box:
        assert box.id in spares  # taken from the pool: installed when it was taken
        code, out, _ = sh(box, f"cat {cacerts.EXTRA}; cat {cacerts.BUNDLE}; echo $SSL_CERT_FILE")
        assert code == 0 and out.count(pem) == 2 and out.endswith(cacerts.BUNDLE + "\n")
    monkeypatch.setenv(cacerts.TRUST_ENV, "1")  # the host's own bundle, by the host's setting
    with rt.boxes.run("busybox", rm=True) as box:
        code, out, _ = sh(box, f"grep -c 'BEGIN CERTIFICATE' {cacerts.EXTRA}")
        assert code == 0 and int(out) == cacerts.host_bundle().count("BEGIN CERTIFICATE")


def test_a_file_that_is_not_pem_fails_create_and_makes_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "ca.der"
    bad.write_bytes(b"\x30\x82\x01\x0a not pem")
    r = mb("create", "--ca-cert", str(bad), "busybox")
    assert r.returncode == 2
    err = r.stderr.decode().strip()
    assert err.count("\n") == 0 and "PEM" in err and "openssl x509 -inform der" in err
    assert json.loads(mb("ls", "-a", "--json").stdout)["data"] == []


def test_tap_boxes_reach_the_host_through_their_gateway(
        rt: microbox.Runtime, pki: tuple[Path, Path, Path],
        server: hostservices.HTTPSServer) -> None:
    try:
        tap.available()
    except microbox.MicroboxError as exc:
        pytest.skip(str(exc))
    url = f"https://{HOST}:{server.port}/"
    with rt.boxes.run("debian", net="tap", allow_private=True, ca_certs=[pki[0]],
                      rm=True) as box:
        # the box's resolver answers the name too (the /etc/hosts line taken away)
        code, out, err = sh(box, f"sed -i '/{HOST}/d' /etc/hosts && getent hosts {HOST} && "
                                 f"curl -sS {url}")
        assert code == 0 and out.split()[:2] == ["10.0.2.2", HOST], err
        assert out.endswith(hostservices.BODY.decode())
    with rt.boxes.run("debian", net="tap", rm=True) as box:
        code, out, err = sh(box, f"curl -sS {url}")
        # The host's listener has taken the connection by the time the shim
        # decides (the kernel answers the SYN): a refusal is a reset, which
        # curl meets at connect (7), in the TLS handshake (35) or reading (56).
        assert code in (7, 35, 56) and out == "", (code, err)
        assert f"{HOST}:{server.port}: the host's loopback ({HOST}), {FLAG}" in \
            box.net_log().decode()
        assert box_dir(box.record).net_log.exists()
