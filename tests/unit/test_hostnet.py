"""Trusted CAs checked on the host (net/cacerts.py), the host's proxies read
from its environment (net/upstream.py), and host.microbox.internal in the
policy file (net/policy.py). NO_PROXY matching itself is the shim's
(host/shim/upstream_test.go)."""

from __future__ import annotations

from pathlib import Path

import pytest

from microbox.errors import HostError, InvalidSpec
from microbox.net import cacerts, policy, upstream
from microbox.spec import BoxSpec
from tests import hostservices


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return hostservices.make_ca(tmp_path_factory.mktemp("pki"), ["x.test"])[0]


def test_pem_files_are_read_and_checked_when_the_spec_is_made(ca: Path, tmp_path: Path) -> None:
    pem = ca.read_text()
    spec = BoxSpec(image="busybox", ca_certs=(str(ca),)).validate()
    assert spec.ca_certs == (pem,)  # stored as text: the file may go
    assert BoxSpec.from_json(spec.to_json()) == spec
    noisy = tmp_path / "noisy.pem"
    noisy.write_text("Bag Attributes\n" + pem + "trailing words\n" + pem)
    assert BoxSpec(image="busybox", ca_certs=(str(noisy),)).ca_certs == (pem + pem,)
    assert "ca_certs" not in BoxSpec(image="busybox").to_json()  # old JSON unchanged


@pytest.mark.parametrize("content", [b"", b"\x30\x82\x01\x0a DER bytes", b"not a cert\n",
                                     b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n"
                                     b"-----END CERTIFICATE-----\n"])
def test_non_pem_files_fail_in_one_sentence_naming_the_fix(content: bytes,
                                                           tmp_path: Path) -> None:
    bad = tmp_path / "bad.crt"
    bad.write_bytes(content)
    with pytest.raises(InvalidSpec) as err:
        BoxSpec(image="busybox", ca_certs=(str(bad),))
    msg = str(err.value)
    assert str(bad) in msg and "openssl x509 -inform der" in msg and "\n" not in msg


def test_missing_file_and_bad_pem_text(tmp_path: Path) -> None:
    with pytest.raises(InvalidSpec, match="No such file"):
        BoxSpec(image="busybox", ca_certs=(str(tmp_path / "none.pem"),))
    spec = BoxSpec(image="busybox", ca_certs=("-----BEGIN CERTIFICATE-----\nAAAA\n"
                                              "-----END CERTIFICATE-----\n",))
    with pytest.raises(InvalidSpec, match="cannot be read"):
        spec.validate()


def test_merged_bundles_replace_the_earlier_block() -> None:
    once = cacerts.merged(b"IMAGE CAS", "NEW\n")
    assert once == f"IMAGE CAS\n{cacerts.BEGIN}NEW\n{cacerts.END}".encode()
    again = cacerts.merged(once + b"LATER\n", "NEWER\n")
    assert again == f"IMAGE CAS\nLATER\n{cacerts.BEGIN}NEWER\n{cacerts.END}".encode()
    assert cacerts.exec_env(False) == {}
    assert set(cacerts.exec_env(True)) == {"SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT",
                                           "NODE_EXTRA_CA_CERTS"}


def test_trust_host_setting() -> None:
    assert cacerts.trust_host_default({cacerts.TRUST_ENV: "1"})
    assert not cacerts.trust_host_default({cacerts.TRUST_ENV: "0"})
    assert not cacerts.trust_host_default({})
    assert "BEGIN CERTIFICATE" in cacerts.host_bundle()


def test_the_hosts_proxies_come_from_its_environment() -> None:
    assert upstream.from_environ({}) is None
    assert upstream.from_environ({"NO_PROXY": "x"}) is None
    got = upstream.from_environ({"HTTPS_PROXY": "http://UP:1", "https_proxy": "http://low:2",
                                 "HTTP_PROXY": "proxy.corp:3128", "NO_PROXY": "a,.b"})
    assert got == {"https": "http://low:2", "http": "proxy.corp:3128", "no_proxy": "a,.b"}
    for bad in ("https://p:3128", "socks5://p:1080", "http://p:port"):
        with pytest.raises(HostError, match="HTTPS_PROXY"):
            upstream.from_environ({"HTTPS_PROXY": bad})


def test_the_policy_names_the_host() -> None:
    def gateway(**kw: object) -> dict[str, object]:
        eff = policy.effective(BoxSpec(image="busybox", net="user", **kw))  # type: ignore[arg-type]
        assert eff is not None
        return dict(eff["host_gateway"])

    assert gateway() == {"names": ["host.microbox.internal"], "address": "10.0.2.2",
                         "target": "127.0.0.1", "allowed": False}
    assert gateway(allow_private=True)["allowed"]
    assert gateway(allow_cidrs=("127.0.0.0/8",))["allowed"]
    assert not gateway(allow_cidrs=("10.0.0.0/8",))["allowed"]
