"""The HTTP API (`microbox serve`) on a real uvicorn server and real boxes."""

from __future__ import annotations

import json
import os
import socket
import stat
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from websockets.sync.client import connect as ws_connect

import microbox
from microbox.api import create_app, server
from microbox.sdk.aio import AsyncRuntime
from tests.vm.conftest import wait_for
from tests.vm.helpers import mb

TOKEN = "test-token-0123456789"


@dataclass
class Served:
    url: str
    client: httpx.Client  # sends the token


def _serve(app: Any, sock: socket.socket) -> tuple[uvicorn.Server, threading.Thread]:
    srv = server.server(app)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_for(lambda: srv.started, 30, "the API server to start")
    return srv, thread


@pytest.fixture(scope="module")
def api(microbox_home: Path) -> Iterator[Served]:
    rt = microbox.Runtime()
    sock = server.bind_tcp("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    srv, thread = _serve(create_app(AsyncRuntime(rt), TOKEN), sock)
    with httpx.Client(base_url=url, timeout=120,
                      headers={"Authorization": f"Bearer {TOKEN}"},
                      limits=httpx.Limits(max_connections=100)) as client:
        yield Served(url, client)
    srv.should_exit = True
    thread.join(30)
    sock.close()
    rt.close()


def _error(r: httpx.Response, status: int, type_: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    assert body["ok"] is False and body["data"] is None
    assert body["error"]["type"] == type_ and body["error"]["message"]
    return body


def _ok(r: httpx.Response, status: int = 200, exit_code: int = 0) -> Any:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["ok"] is True and body["error"] is None and body["exit_code"] == exit_code
    return body["data"]


# -- no VM -------------------------------------------------------------------


def test_token_is_required_except_for_health(api: Served) -> None:
    bare = httpx.Client(base_url=api.url)
    _error(bare.get("/boxes"), 401, "unauthorized")
    _error(bare.get("/openapi.json"), 401, "unauthorized")
    wrong = bare.get("/boxes", headers={"Authorization": "Bearer wrong"})
    assert _error(wrong, 401, "unauthorized")["command"] == "list"
    _error(bare.get("/boxes", headers={"Authorization": TOKEN}), 401, "unauthorized")
    assert _ok(bare.get("/health"))["status"] == "ok"
    assert _ok(api.client.get("/boxes")) == []


def test_limits_and_malformed_input(api: Served) -> None:
    big = {"image": "busybox", "labels": {"k": "x" * (1 << 20)}}
    _error(api.client.post("/boxes", json=big), 413, "too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: cut off while streaming
        yield b'{"image": "busybox", "name": "'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"}'

    _error(api.client.post("/boxes", content=chunks()), 413, "too_large")
    r = api.client.post("/boxes", content=b"{not json",
                        headers={"Content-Type": "application/json"})
    assert _error(r, 422, "invalid_request")["command"] == "create"
    _error(api.client.post("/boxes", json={"cpus": "many"}), 422, "invalid_request")
    _error(api.client.post("/boxes", json={"imag": "typo"}), 422, "invalid_request")
    _error(api.client.post("/boxes/nope/run", json={"command": []}), 422, "invalid_request")
    _error(api.client.get("/boxes/nope"), 404, "not_found")
    _error(api.client.get("/boxes?status=sleepy"), 422, "invalid_request")
    _error(api.client.get("/no/such/route"), 404, "not_found")
    _error(api.client.post("/boxes", json={"memory_mib": 1}), 422, "invalid_spec")


def test_openapi_documents_every_route(api: Served) -> None:
    spec = _ok_json(api.client.get("/openapi.json"))
    ops = [(path, method, op) for path, item in spec["paths"].items()
           for method, op in item.items()]
    assert len(ops) >= 17
    for path, method, op in ops:
        assert op.get("summary"), f"{method} {path} has no summary"
        assert "200" in op["responses"] or "201" in op["responses"], (method, path)
    assert "HTTPBearer" in spec["components"]["securitySchemes"]


def _ok_json(r: httpx.Response) -> Any:
    assert r.status_code == 200, r.text
    return r.json()


def test_unix_socket_needs_no_token(microbox_home: Path, tmp_path: Path) -> None:
    path = Path(f"/tmp/mbapi-{os.getpid()}.sock")  # short: sun_path is 108 bytes
    rt = microbox.Runtime()
    sock = server.bind_unix(path)
    srv, thread = _serve(create_app(AsyncRuntime(rt), None), sock)
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(path)),
                          base_url="http://microbox") as client:
            assert _ok(client.get("/boxes")) == []
            assert "/boxes/{ref}/exec" in _ok_json(client.get("/openapi.json"))["paths"]
    finally:
        srv.should_exit = True
        thread.join(30)
        sock.close()
        path.unlink(missing_ok=True)
        rt.close()


def test_tcp_listener_gets_nodelay() -> None:
    # asyncio sets TCP_NODELAY only on sockets made with proto IPPROTO_TCP; without
    # it each answer written in two parts waits for the client's delayed ACK
    sock = server.bind_tcp("127.0.0.1", 0)
    with sock:
        assert sock.proto == socket.IPPROTO_TCP


def test_non_loopback_host_without_token_refuses_to_start() -> None:
    r = mb("serve", "--host", "0.0.0.0", "--port", "0", timeout=30)
    assert r.returncode == 2
    lines = r.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "--token-file" in lines[0], r.stderr


# -- real boxes --------------------------------------------------------------


def _create(api: Served, **body: Any) -> dict[str, Any]:
    data: dict[str, Any] = _ok(api.client.post("/boxes", json={"image": "busybox", **body}),
                               201)
    return data


def _ndjson(r: httpx.Response) -> Iterator[dict[str, Any]]:
    for line in r.iter_lines():
        yield json.loads(line)


def test_box_lifecycle(api: Served, tmp_path: Path) -> None:
    info = _create(api, name="api-life", labels={"team": "api"})
    assert info["status"] == "running" and info["labels"] == {"team": "api"}
    ref = info["id"]
    try:
        _lifecycle(api, ref)
    finally:
        api.client.delete(f"/boxes/{ref}", params={"force": True})


def _lifecycle(api: Served, ref: str) -> None:
    assert [b["name"] for b in _ok(api.client.get("/boxes?label=team=api"))] == ["api-life"]
    assert _ok(api.client.get("/boxes?label=team=other")) == []

    run = _ok(api.client.post(f"/boxes/{ref}/run", json={
        "command": ["sh", "-c", "cat; echo err >&2; exit 3"], "stdin": "in put"}), exit_code=3)
    assert (run["exit_code"], run["stdout"], run["stderr"]) == (3, "in put", "err\n")
    raw = _ok(api.client.post(f"/boxes/{ref}/run", json={"command": ["printf", "\\377"]}))
    assert (raw["encoding"], raw["stdout"]) == ("base64", "/w==")
    _error(api.client.post(f"/boxes/{ref}/run", json={"command": ["no-such"]}), 422, "exec")

    with api.client.stream("POST", f"/boxes/{ref}/exec", json={
            "command": ["sh", "-c", "echo one; cat >&2; exit 7"], "stdin": "two"}) as r:
        assert r.headers["content-type"] == "application/x-ndjson"
        events = list(_ndjson(r))
    assert events[0]["type"] == "start" and events[0]["pid"] > 0
    assert {"type": "stdout", "data": "one\n", "encoding": "utf-8"} in events
    assert {"type": "stderr", "data": "two", "encoding": "utf-8"} in events
    assert events[-1] == {"type": "exit", "exit_code": 7, "code": 7, "signal": None,
                          "timed_out": False}

    payload = os.urandom(300_000)
    up = _ok(api.client.put(f"/boxes/{ref}/files", params={"path": "/root/d/blob",
                                                          "mode": "0751"}, content=payload))
    assert up == {"path": "/root/d/blob", "size": len(payload), "mode": 0o751}
    check = _ok(api.client.post(f"/boxes/{ref}/run",
                                json={"command": ["stat", "-c", "%a %s", "/root/d/blob"]}))
    assert check["stdout"] == f"751 {len(payload)}\n"
    with api.client.stream("GET", f"/boxes/{ref}/files", params={"path": "/root/d/blob"}) as r:
        assert r.status_code == 200 and r.headers["x-microbox-mode"] == "0751"
        assert b"".join(r.iter_bytes()) == payload
    _error(api.client.get(f"/boxes/{ref}/files", params={"path": "/nope"}), 404, "not_found")

    assert _ok(api.client.get(f"/boxes/{ref}/logs", params={"tail": 0})) == {"log": ""}

    _error(api.client.delete(f"/boxes/{ref}"), 409, "state")
    assert _ok(api.client.post(f"/boxes/{ref}/stop"))["status"] == "stopped"
    assert _ok(api.client.patch(f"/boxes/{ref}", json={"memory_mib": 128}))["memory_mib"] == 128
    info = _ok(api.client.patch(f"/boxes/{ref}", json={"deny_all": True,
                                                      "allow_hosts": ["pypi.org"]}))
    assert info["spec"]["deny_all"] is True and info["spec"]["allow_hosts"] == ["pypi.org"]
    assert info["memory_mib"] == 128  # a field left out keeps its value
    _error(api.client.patch(f"/boxes/{ref}", json={"net": "none"}), 422, "invalid_spec")
    info = _ok(api.client.patch(f"/boxes/{ref}", json={"net": "none", "reset_policy": True}))
    assert info["spec"]["net"] == "none" and info["spec"]["allow_hosts"] == []
    _error(api.client.patch(f"/boxes/{ref}", json={}), 422, "invalid_request")
    _error(api.client.post(f"/boxes/{ref}/run", json={"command": ["true"]}), 409, "state")
    assert _ok(api.client.delete(f"/boxes/{ref}")) == {"deleted": ref}
    _error(api.client.get(f"/boxes/{ref}"), 404, "not_found")
    assert _ok(api.client.get("/boxes?all=true")) == []


def test_fifty_parallel_requests(api: Served) -> None:
    ref = _create(api, name="api-par")["id"]
    try:
        def one(i: int) -> tuple[int, str]:
            if i % 2:
                return api.client.get("/boxes").status_code, ""
            r = api.client.post(f"/boxes/{ref}/run", json={"command": ["echo", str(i)]})
            return r.status_code, _ok(r)["stdout"]

        with ThreadPoolExecutor(50) as pool:
            answers = list(pool.map(one, range(50)))
        assert [code for code, _ in answers] == [200] * 50
        assert [out for _, out in answers[::2]] == [f"{i}\n" for i in range(0, 50, 2)]
    finally:
        _ok(api.client.delete(f"/boxes/{ref}", params={"force": True}))


def test_websocket_exec_is_live_and_interactive(api: Served) -> None:
    ref = _create(api, name="api-ws")["id"]
    try:
        url = api.url.replace("http", "ws") + f"/boxes/{ref}/exec/ws"
        with pytest.raises(Exception, match="401"):
            ws_connect(url).close()
        with ws_connect(url, additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
            ws.send(json.dumps({"command": ["sh", "-c",
                                            "echo ready; read x; echo got $x >&2; cat; exit 5"]}))
            assert json.loads(ws.recv())["type"] == "started"
            assert ws.recv() == b"\x01ready\n"  # before any stdin: output is live
            ws.send(b"hello\n")
            assert ws.recv() == b"\x02got hello\n"
            ws.send(b"rest")
            ws.send(json.dumps({"type": "eof"}))
            assert ws.recv() == b"\x01rest"
            assert json.loads(ws.recv())["exit_code"] == 5
        # a client that hangs up: its process is killed, not left running
        with ws_connect(url, additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
            ws.send(json.dumps({"command": ["sh", "-c", "echo up; exec sleep 997"]}))
            assert json.loads(ws.recv())["type"] == "started"
            assert ws.recv() == b"\x01up\n"

        def gone() -> bool:
            ps = _ok(api.client.post(f"/boxes/{ref}/run", json={"command": ["ps"]}))
            return "sleep 997" not in ps["stdout"]

        wait_for(gone, 30, "the abandoned process to be killed")
    finally:
        _ok(api.client.delete(f"/boxes/{ref}", params={"force": True}))


def test_rm_box_outlives_the_request_and_goes_when_its_command_ends(api: Served) -> None:
    ref = _create(api, name="api-rm", rm=True,
                  command=["sh", "-c", "echo api-log-line; "
                           "while [ ! -e /tmp/stop ]; do sleep 1; done"])["id"]
    assert _ok(api.client.get(f"/boxes/{ref}"))["status"] == "running"  # request is over
    seen = b""
    with api.client.stream("GET", f"/boxes/{ref}/logs", params={"follow": True}) as r:
        for chunk in r.iter_bytes():  # the log so far, then live: hang up once it came
            seen += chunk
            if b"api-log-line" in seen:
                break
    log = _ok(api.client.get(f"/boxes/{ref}/logs", params={"tail": 1}))["log"]
    assert len(log.splitlines()) == 1
    # ending the main command powers the box off, which may cut this request short
    r = api.client.post(f"/boxes/{ref}/run", json={"command": ["sh", "-c", ": > /tmp/stop"]})
    assert r.status_code in (200, 502, 503), r.text

    def removed() -> bool:
        return api.client.get(f"/boxes/{ref}").status_code == 404

    wait_for(removed, 60, "the --rm box to be removed after its command ended")


def test_snapshot_fork_and_restore_routes(api: Served) -> None:
    box = _create(api, name="api-snap")
    try:
        c = api.client
        _ok(c.post(f"/boxes/{box['id']}/run", json={"command": ["sh", "-c", "echo s > /root/s"]}))
        snap = _ok(c.post(f"/boxes/{box['id']}/snapshots", json={"name": "api-s1"}), 201)
        assert snap["name"] == "api-s1" and snap["box"] == "api-snap"
        assert [s["name"] for s in _ok(c.get("/snapshots"))] == ["api-s1"]
        back = _ok(c.post("/snapshots/api-s1/restore", json={"name": "api-back"}), 201)
        (kid,) = _ok(c.post(f"/boxes/{box['id']}/fork", json={"count": 1}), 201)
        for ref in (back["id"], kid["id"]):
            r = _ok(c.post(f"/boxes/{ref}/run", json={"command": ["cat", "/root/s"]}))
            assert r["stdout"] == "s\n"
        err = _error(c.delete("/snapshots/api-s1"), 409, "state")
        assert "-f" in err["error"]["recovery"]
        for ref in (back["id"], kid["id"]):
            _ok(c.delete(f"/boxes/{ref}", params={"force": True}))
        assert _ok(c.delete("/snapshots/api-s1"))["deleted"] == snap["id"]
        _error(c.get("/snapshots/api-s1"), 404, "not_found")
    finally:
        api.client.delete(f"/boxes/{box['id']}", params={"force": True})


def test_published_port_through_the_api(api: Served) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    box = _create(api, name="api-port", ports=[f"{port}:7000"],
                  command=["nc", "-ll", "-p", "7000", "-e", "cat"])
    try:
        assert box["spec"]["ports"] == [{"host_ip": "127.0.0.1", "host_port": port,
                                         "guest_port": 7000, "proto": "tcp"}]
        listening = ("until grep -qiE ':1B58 [0-9A-F]+:0000 0A' /proc/net/tcp /proc/net/tcp6;"
                     " do usleep 10000; done")
        _ok(api.client.post(f"/boxes/{box['id']}/run", json={"command": ["sh", "-c", listening]}))
        with socket.create_connection(("127.0.0.1", port), timeout=30) as c:
            c.sendall(b"via the api\n")
            assert c.recv(64) == b"via the api\n"
        r = api.client.post("/boxes", json={"name": "api-port2", "ports": [f"{port}:7000"]})
        assert r.status_code == 422, r.text
        assert "already in use" in r.json()["error"]["message"]
    finally:
        api.client.delete(f"/boxes/{box['id']}", params={"force": True})


def test_pool_routes(api: Served) -> None:
    from microbox.store import boxes as box_rows

    c = api.client
    err = _error(c.post("/pools", json={"image": "busybox", "net": "tap"}), 422, "invalid_spec")
    assert "--net user or none" in err["error"]["message"]
    made = _ok(c.post("/pools", json={"image": "busybox", "size": 1}), 201)
    try:
        assert (made["image"], made["size"], made["ready"]) == ("busybox", 1, 1)
        assert [p["id"] for p in _ok(c.get("/pools"))] == [made["id"]]
        assert _ok(c.get("/pools/busybox"))["id"] == made["id"]
        (spare,) = box_rows.spares(microbox.Runtime().db)
        box = _create(api, name="api-pooled", start=True, rm=True)
        assert box["id"] == spare.id and box["name"] == "api-pooled"
        r = _ok(c.post(f"/boxes/{box['id']}/run", json={"command": ["hostname"]}))
        assert r["stdout"] == "api-pooled\n"
        _ok(c.delete(f"/boxes/{box['id']}", params={"force": True}))
    finally:
        assert _ok(c.delete(f"/pools/{made['id']}"))["deleted"] == made["id"]
    _error(c.get("/pools/busybox"), 404, "not_found")


# -- builds and commits ---------------------------------------------------------


def _events(api: Served, body: dict[str, Any]) -> list[dict[str, Any]]:
    with api.client.stream("POST", "/images/build", json=body) as r:
        assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
        return [json.loads(line) for line in r.iter_lines() if line]


def test_build_streams_its_steps_and_commit_makes_an_image(api: Served,
                                                           tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM busybox\nRUN echo made > /made; echo said\n"
                                         "CMD [\"cat\", \"/made\"]\n")
    events = _events(api, {"context": str(tmp_path), "tag": "api-built", "net": "none"})
    assert [e["type"] for e in events][-1] == "result"
    assert any(e["type"] == "step" and "RUN echo made" in e["text"] for e in events)
    assert any(e["type"] == "output" and "said" in e["text"] for e in events)
    assert events[-1]["data"]["name"] == "api-built"

    (tmp_path / "Dockerfile").write_text("FROM busybox\nRUN exit 4\n")
    failed = _events(api, {"context": str(tmp_path), "tag": "api-broken", "net": "none"})
    assert failed[-1]["type"] == "error" and failed[-1]["exit_code"] == 4
    assert "Dockerfile:2" in failed[-1]["error"]["message"]
    _error(api.client.post("/images/build", json={"context": "relative/dir"}), 422,
           "invalid_request")

    # a main command that lasts: the image's own (cat) would end, and the box with it
    ref = _ok(api.client.post("/boxes", json={"image": "api-built", "net": "none",
                                              "name": "api-commit",
                                              "command": ["sleep", "3600"]}), 201)["id"]
    try:
        _ok(api.client.post(f"/boxes/{ref}/run", json={"command": ["sh", "-c",
                                                                   "echo more > /more"]}))
        made = _ok(api.client.post(f"/boxes/{ref}/commit", json={
            "name": "api-committed", "changes": ['CMD ["cat", "/more"]']}))
        assert made["name"] == "api-committed"
        with microbox.Runtime() as rt, rt.boxes.run("api-committed", net="none") as box:
            assert box.run(box.main).stdout == b"more\n"
        _error(api.client.post(f"/boxes/{ref}/commit", json={
            "name": "x", "changes": ["RUN true"]}), 400, "usage")
    finally:
        api.client.delete(f"/boxes/{ref}", params={"force": True})
