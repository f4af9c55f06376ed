"""Real registries on 127.0.0.1 for the tests: Debian's `docker-registry`,
anonymous, with basic auth (htpasswd, bcrypt) or with bearer tokens from a tiny
token server here (JWTs signed by a throwaway key, trusted through x5c). Test
images are OCI layouts written from Python and pushed with `skopeo copy`."""

from __future__ import annotations

import base64
import datetime
import json
import secrets
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from tests.oci import E, Layout

USER, PASSWORD = "tester", "s3cret-pass"
SERVICE, ISSUER = "microbox-test-registry", "microbox-test-issuer"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Registry:
    host: str  # 127.0.0.1:PORT
    proc: subprocess.Popen[bytes]
    creds: str | None = None  # USER:PASSWORD for pushes

    def push(self, layout: Path, tag: str, target: str, *, all_platforms: bool = False) -> None:
        cmd = ["skopeo", "--insecure-policy", "copy", "--dest-tls-verify=false", "-q"]
        cmd += ["--all"] if all_platforms else []
        cmd += ["--dest-creds", self.creds] if self.creds else []
        subprocess.run([*cmd, f"oci:{layout}:{tag}", f"docker://{self.host}/{target}"],
                       check=True, capture_output=True, timeout=120)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _wait_ready(host: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"docker-registry exited with {proc.returncode}")
        try:
            urllib.request.urlopen(f"http://{host}/v2/", timeout=2)
            return
        except urllib.error.HTTPError:
            return  # 401: up, asking for credentials
        except OSError:
            time.sleep(0.02)  # not listening yet: poll with a bound, never a fixed wait
    raise RuntimeError("docker-registry did not come up")


def start(root: Path, auth: dict[str, object] | None = None) -> Registry:
    port = free_port()
    config: dict[str, object] = {
        "version": 0.1, "log": {"level": "error"},
        "storage": {"filesystem": {"rootdirectory": str(root / "data")},
                    "delete": {"enabled": True}},
        "http": {"addr": f"127.0.0.1:{port}"},
    }
    if auth:
        config["auth"] = auth
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.yml").write_text(json.dumps(config))  # JSON is YAML
    log = open(root / "registry.log", "wb")  # noqa: SIM115 (the process keeps it)
    proc = subprocess.Popen(["docker-registry", "serve", str(root / "config.yml")],
                            stdout=log, stderr=log)
    host = f"127.0.0.1:{port}"
    _wait_ready(host, proc)
    return Registry(host, proc)


def start_basic(root: Path) -> Registry:
    root.mkdir(parents=True, exist_ok=True)
    hashed = subprocess.run(["htpasswd", "-Bbn", USER, PASSWORD], check=True,
                            capture_output=True, text=True).stdout
    (root / "htpasswd").write_text(hashed)
    reg = start(root, {"htpasswd": {"realm": "test", "path": str(root / "htpasswd")}})
    reg.creds = f"{USER}:{PASSWORD}"
    return reg


class TokenServer:
    """Hands anonymous clients a token for whatever scope they ask (pull and push)."""

    def __init__(self, root: Path) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "microbox test tokens")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(days=1))
                     .not_valid_after(now + datetime.timedelta(days=1))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
                     .sign(self.key, hashes.SHA256()))
        self.bundle = root / "token-ca.pem"
        root.mkdir(parents=True, exist_ok=True)
        self.bundle.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self.issued = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
                body = json.dumps({"token": server.token(query.get("scope", []))}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/token"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def token(self, scopes: list[str]) -> str:
        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        access = []
        for scope in scopes:
            for one in scope.split(" "):
                kind, name, actions = one.split(":")[0], ":".join(one.split(":")[1:-1]), \
                    one.split(":")[-1]
                access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        der = self.cert.public_bytes(serialization.Encoding.DER)
        header = {"alg": "RS256", "typ": "JWT", "x5c": [base64.b64encode(der).decode()]}
        claims = {"iss": ISSUER, "sub": "", "aud": SERVICE, "exp": now + 300, "nbf": now - 10,
                  "iat": now, "jti": secrets.token_hex(8), "access": access}
        signing = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
        sig = self.key.sign(signing.encode(), padding.PKCS1v15(), hashes.SHA256())
        self.issued += 1
        return f"{signing}.{b64(sig)}"

    def stop(self) -> None:
        self.httpd.shutdown()


def start_token(root: Path) -> tuple[Registry, TokenServer]:
    tokens = TokenServer(root)
    reg = start(root, {"token": {"realm": tokens.url, "service": SERVICE, "issuer": ISSUER,
                                 "rootcertbundle": str(tokens.bundle)}})
    return reg, tokens


# -- the test images ---------------------------------------------------------

PASSWD = b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"
GROUP = b"root:x:0:\napp:x:1000:\n"
APP_CONFIG = {"Env": ["PATH=/bin:/usr/bin", "GREETING=hello from the image"],
              "Entrypoint": ["/bin/sh", "-c"],
              "Cmd": ['echo "$GREETING as $(id -un) in $(pwd)"'],
              "WorkingDir": "/home/app/work", "User": "app"}


def busybox_layer() -> list[E]:
    bb = Path(shutil.which("busybox") or "/bin/busybox").read_bytes()
    entries = [E("bin", "dir"), E("bin/busybox", data=bb, mode=0o755)]
    entries += [E(f"bin/{a}", "symlink", link="busybox")
                for a in ("sh", "id", "cat", "ls", "echo", "pwd", "stat", "env", "true")]
    return entries


def app_layers(payload: bytes = b"") -> list[list[E]]:
    """Three layers: busybox; users, a non-root home, files to hide; whiteouts, an
    opaque dir, a setuid file, an xattr (and `payload` as a big file, if any)."""
    second = [E("etc", "dir"), E("etc/passwd", data=PASSWD), E("etc/group", data=GROUP),
              E("home", "dir"), E("home/app", "dir", uid=1000, gid=1000, mode=0o750),
              E("home/app/work", "dir", uid=1000, gid=1000),
              E("home/app/work/mine.txt", data=b"owned by app\n", uid=1000, gid=1000,
                mode=0o640),
              E("gone.txt", data=b"whited out\n"), E("opq", "dir"),
              E("opq/old.txt", data=b"hidden by the opaque dir\n"), E("tmp", "dir", mode=0o1777)]
    third = [E(".wh.gone.txt", "whiteout"), E("opq", "dir"), E("opq/.wh..wh..opq", "whiteout"),
             E("opq/new.txt", data=b"new\n"),
             E("bin/suid", data=b"#!/bin/sh\n", mode=0o4755),
             E("etc/tagged", data=b"x", xattrs={"user.microbox": "kept"})]
    if payload:
        third.append(E("payload.bin", data=payload))
    return [busybox_layer(), second, third]


def write_images(root: Path) -> Path:
    """One layout holding every test image, tagged app, zstd, multi."""
    layout = Layout(root)
    layout.tag(layout.image(app_layers(), APP_CONFIG), "app")
    layout.tag(layout.image(app_layers(), APP_CONFIG, compression="zstd"), "zstd")
    amd = layout.image([busybox_layer(), [E("arch", data=b"amd64\n")]], {"Cmd": ["cat", "/arch"]})
    arm = layout.image([[E("arch", data=b"arm64\n")]], {"Cmd": ["cat", "/arch"]}, arch="arm64")
    layout.tag(layout.multi([arm, amd]), "multi")
    return root


def populate(reg: Registry, layout: Path) -> None:
    reg.push(layout, "app", "test/app:1")
    reg.push(layout, "zstd", "test/zstd:1")
    reg.push(layout, "multi", "test/multi:1", all_platforms=True)


def session_registries(root: Path) -> Iterator[dict[str, Registry]]:
    """The anonymous, basic-auth and token registries, each holding the test images."""
    layout = write_images(root / "layout")
    anon = start(root / "anon")
    basic = start_basic(root / "basic")
    token, tokens = start_token(root / "token")
    try:
        for reg in (anon, basic, token):
            populate(reg, layout)
        yield {"anon": anon, "basic": basic, "token": token}
    finally:
        for reg in (anon, basic, token):
            reg.stop()
        tokens.stop()
