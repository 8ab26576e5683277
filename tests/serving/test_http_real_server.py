"""The request limits against a real `offers serve` (uvicorn + httptools) on 127.0.0.1.

The serving world's tiny booster is registered as champion in a real MLflow store (in a
subprocess, so this test process's MLflow settings stay untouched), then one server process
serves the module. Raw sockets show what the server does before a request is complete: it
answers without waiting for the rest of a huge head or body, which a client library hides.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from registered import REGISTER
from servers import free_port, running
from serving_world import NOW, World

pytestmark = pytest.mark.slow

TOKEN = "real-server-token"
BIN = Path(sys.executable).parent
MAX_BODY = 65536  # OFFERS_MAX_BODY_BYTES given to the server: the setting reaches the workers
MAX_HEADER = 16384  # the default
OK_BODY = {"user_id": "u_ok", "purpose": "offer_ranking", "now": NOW}


@dataclass
class Served:
    host: str
    port: int

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"


@pytest.fixture(scope="module")
def served(_world_template: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("real-server")
    home, data = root / "home", root / "data"
    shutil.copytree(_world_template.home, home)
    shutil.copytree(_world_template.data, data)
    _world_template.booster.save_model(str(root / "model.txt"))
    env = {
        **os.environ,
        "OFFERS_HOME": str(home),
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
        "OMP_WAIT_POLICY": "PASSIVE",
    }
    subprocess.run(
        [sys.executable, "-c", REGISTER, str(home), str(root / "model.txt")],
        env=env, cwd=root, check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    env |= {"OFFERS_API_TOKENS": TOKEN, "OFFERS_MAX_BODY_BYTES": str(MAX_BODY)}
    env.pop("OFFERS_MAX_HEADER_BYTES", None)
    env.pop("OFFERS_PUBLIC_DOCS", None)
    command = [str(BIN / "offers"), "serve", "--data", str(data), "--port", str(port),
               "--allow-past-now"]  # fmt: skip
    with running(command, env, f"http://127.0.0.1:{port}/healthz", root / "serve.log"):
        yield Served("127.0.0.1", port)


def _exchange(served: Served, *parts: bytes) -> bytes:
    """Send `parts` (a request that may never complete) and read until the server closes."""
    with socket.create_connection((served.host, served.port), timeout=10) as sock:
        for part in parts:
            sock.sendall(part)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _status_and_detail(raw: bytes) -> tuple[int, str]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)["detail"]


def _head(*lines: str) -> bytes:
    return ("\r\n".join(["POST /v1/rank HTTP/1.1", "Host: 127.0.0.1", *lines]) + "\r\n").encode()


def test_an_endless_header_gets_431_without_the_server_waiting_for_its_end(served: Served):
    """Today's 1 MB Authorization header: the server answers once the head passes the limit,
    from the protocol (the head never completes here, so the app never sees it)."""
    start = _head("Authorization: Bearer ")[:-2]  # the header line never ends
    # One byte over: the server has read all that was sent when it answers (a close with
    # unread bytes would reset the connection and could lose the answer).
    raw = _exchange(served, start + b"x" * (MAX_HEADER + 1 - len(start)))
    status, detail = _status_and_detail(raw)
    assert status == 431 and "OFFERS_MAX_HEADER_BYTES" in detail


def test_a_complete_oversized_header_is_431_not_401(served: Served) -> None:
    headers = {"Authorization": "Bearer " + "x" * (MAX_HEADER + 1000)}
    response = httpx.post(f"{served.base}/v1/rank", json=OK_BODY, headers=headers, timeout=10)
    assert response.status_code == 431 and response.headers["connection"] == "close"


def test_a_declared_20_mb_body_is_413_before_one_byte_of_it_is_sent(served: Served) -> None:
    head = _head(f"Authorization: Bearer {TOKEN}", "Content-Type: application/json",
                 "Content-Length: 20000000") + b"\r\n"  # fmt: skip
    status, detail = _status_and_detail(_exchange(served, head))
    assert status == 413 and f"limit of {MAX_BODY} bytes" in detail


def test_a_chunked_body_is_413_once_it_passes_the_limit(served: Served) -> None:
    """The body never ends (no last chunk): the answer comes when it passes the limit."""
    head = _head(f"Authorization: Bearer {TOKEN}", "Content-Type: application/json",
                 "Transfer-Encoding: chunked") + b"\r\n"  # fmt: skip
    chunk = b"%x\r\n%s\r\n" % (4096, b" " * 4096)
    over = chunk * (MAX_BODY // 4096) + b"1\r\n \r\n"  # one byte over the limit, then nothing
    status, detail = _status_and_detail(_exchange(served, head, over))
    assert status == 413 and f"limit of {MAX_BODY} bytes" in detail


def test_a_body_under_the_limit_is_served(served: Served) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    response = httpx.post(f"{served.base}/v1/rank", json=OK_BODY, headers=auth, timeout=10)
    assert response.status_code == 200 and response.json()["decision"] == "allow"


@pytest.mark.parametrize(
    ("body", "status", "expected"),
    [
        (OK_BODY, 200, {"decision": "allow"}),
        ({**OK_BODY, "purpose": " TARGETED_ADVERTISING"}, 403, {"reason_code": "BANNED_PURPOSE"}),
        ({**OK_BODY, "now": "9999-12-31T23:59:59Z"}, 422, {}),
    ],
)
def test_the_readme_curl_without_a_content_type_works(
    served: Served, body: dict, status: int, expected: dict
) -> None:
    """curl -d sends application/x-www-form-urlencoded; the README's command has no -H for it."""
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    out = subprocess.run(
        [curl, "-s", "-w", "\n%{http_code}", "-H", f"Authorization: Bearer {TOKEN}",
         "-d", json.dumps(body), f"{served.base}/v1/rank"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    text, code = out.stdout.rsplit("\n", 1)
    assert int(code) == status, text
    assert expected.items() <= json.loads(text).items()


def test_docs_are_private_by_default(served: Served) -> None:
    with httpx.Client(base_url=served.base, timeout=10) as http:
        assert http.get("/docs").status_code == 404
        assert http.get("/openapi.json").status_code == 401
        assert http.get("/readyz").json() == {"status": "ready"}
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert http.get("/readyz", headers=auth).json()["model"]["name"] == "offer-ranker"
