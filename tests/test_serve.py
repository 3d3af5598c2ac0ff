"""``dldl serve``: the JSON API in-process (TestClient), its caps and errors, and a small load test of the real server."""

import numpy as np
import pytest
from PIL import Image

from conftest import load_benchmark

pytest.importorskip("httpx2", reason="starlette's TestClient needs httpx2 (the dev extra)")

import dldl  # noqa: E402
from dldl.assets import PHOTOS_DIR  # noqa: E402
from dldl.predictor import TASKS  # noqa: E402

if not set(TASKS.values()) <= set(dldl.list_pretrained()):
    pytest.skip("the shipped models are not in this checkout", allow_module_level=True)

server_load = load_benchmark("server_load")
MAX_UPLOAD = 200_000
PHOTO = PHOTOS_DIR / "steward-masweneng-Ws4YEqBafus-unsplash.jpg"  # two faces


@pytest.fixture(scope="module")
def detector():
    from dldl.faces import get_detector

    return get_detector()


@pytest.fixture(scope="module")
def client(detector):
    from fastapi.testclient import TestClient

    from dldl.serve import create_app

    return TestClient(create_app(dict(TASKS), detector, max_upload_bytes=MAX_UPLOAD))


def post(client, filename, data, **params):
    return client.post("/v1/predict", params=params, files={"file": (filename, data, "application/octet-stream")})


@pytest.mark.parametrize("task", ["age", "beauty"])
def test_photo_matches_predictor(client, detector, task):
    from dldl.data.images import read_image
    from dldl.predictor import Predictor

    response = post(client, PHOTO.name, PHOTO.read_bytes(), task=task)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["path"] == PHOTO.name and result["error"] is None and result["task"] == task
    expected = Predictor(dldl.load(TASKS[task], runtime="auto"), detector).predict(np.asarray(read_image(PHOTO)))  # as the server and dldl predict run it
    assert len(result["faces"]) == len(expected) == 2
    labels = dldl.load(TASKS[task]).labels
    for number, (face, want) in enumerate(zip(result["faces"], expected), 1):
        dist = face.pop("distribution")
        assert face == {"face": number, **want.to_dict(task)}  # the same serialisation as dldl predict --json
        assert dist["labels"] == pytest.approx(labels.values().tolist())
        assert dist["probs"] == pytest.approx(want.distribution.tolist(), abs=1e-5)
        assert sum(dist["probs"]) == pytest.approx(1, abs=1e-3)


def test_photo_without_a_face(client):
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (320, 240), (120, 160, 200)).save(buffer, "PNG")
    response = post(client, "sky.png", buffer.getvalue())
    assert response.status_code == 200 and response.json()["faces"] == [] and response.json()["error"] is None


@pytest.mark.parametrize("upload", [u for u in server_load.uploads(MAX_UPLOAD) if not u.valid], ids=lambda u: u.kind)
def test_invalid_upload_is_a_4xx_with_a_reason(client, upload):
    body, content_type = server_load.multipart(upload)
    response = client.post("/v1/predict", content=body, headers={"Content-Type": content_type})
    assert response.status_code == (413 if upload.kind == "oversize" else 422), response.text
    error = response.json()["error"]
    assert error and "\n" not in error and "Traceback" not in error and "dldl-upload-" not in error
    assert response.json()["faces"] == []
    if upload.kind in ("random_bytes", "empty", "truncated_jpeg", "too_many_pixels"):
        assert error.startswith(f"{upload.filename}: ") and response.json()["path"] == upload.filename
    expected = {"empty": "empty file", "too_many_pixels": "pixels", "oversize": f"{MAX_UPLOAD:,} bytes",
                "no_file_field": "form field 'file'", "truncated_jpeg": "truncated", "random_bytes": "not a readable image"}
    assert expected[upload.kind] in error


def test_request_errors(client, detector):
    from fastapi.testclient import TestClient

    from dldl.serve import create_app

    assert "Input should be 'age' or 'beauty'" in post(client, "a.jpg", b"x", task="nose").json()["error"]
    age_only = TestClient(create_app({"age": TASKS["age"]}, detector))
    response = post(age_only, PHOTO.name, PHOTO.read_bytes(), task="beauty")
    assert response.status_code == 422 and "not served here (serving: age)" in response.json()["error"]
    busy = TestClient(create_app(None, detector, max_pending=0))  # the queue is full: refuse at once
    response = post(busy, PHOTO.name, PHOTO.read_bytes())
    assert response.status_code == 503 and "server busy" in response.json()["error"]
    assert client.get("/no/such/page").json()["error"] == "Not Found"


def test_server_fault_is_a_json_500_without_traceback():
    from fastapi.testclient import TestClient

    from dldl.serve import create_app

    class BrokenDetector:
        def detect(self, image):
            raise RuntimeError("detector exploded at /secret/path")

    broken = TestClient(create_app(None, BrokenDetector()), raise_server_exceptions=False)
    response = post(broken, PHOTO.name, PHOTO.read_bytes())
    assert response.status_code == 500 and response.json()["error"] == "internal error (RuntimeError); see the server log"


def test_page_health_models_docs(client):
    import re

    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//|@import|url\(\s*["']?https?:""", page.text)
    assert client.get("/v1/health").json()["tasks"] == ["age", "beauty"]
    models = client.get("/v1/models").json()
    labels = dldl.load(TASKS["beauty"]).labels
    assert models["beauty"]["labels"] == {"start": labels.start, "stop": labels.stop, "step": labels.step}
    docs = client.get("/docs")  # built here from the schema: nothing from a CDN, so it works offline
    assert docs.status_code == 200 and "POST /v1/predict" in docs.text
    assert "<script" not in docs.text and "cdn" not in docs.text.lower()
    assert client.head("/").status_code == 200
    assert "/v1/predict" in client.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize("args, problem", [(["--task", "both", "--model", "x.pt"], "--model serves one task"),
                                           (["--task", "nose"], "unknown task 'nose'"),
                                           (["--max-upload-mb", "0"], "must be > 0"),
                                           (["--max-upload-mb", "inf"], "--max-upload-mb inf: must be > 0 and at most 1000"),
                                           (["--port", "70000"], "--port 70000: must be in 0-65535")])
def test_serve_cli_rejects_bad_options(args, problem):
    from typer.testing import CliRunner

    from dldl.cli import app
    from dldl.errors import DldlError

    result = CliRunner().invoke(app, ["serve", *args])  # the console entry point prints DldlError as one line
    assert isinstance(result.exception, DldlError) and problem in str(result.exception)


@pytest.mark.slow
def test_small_load_against_dldl_serve(tmp_path):
    """40 mixed uploads from 8 clients against a real ``dldl serve``: all answered, each right (no timing asserts)."""
    summary = server_load.run(requests=40, clients=8, max_upload_mb=0.2, log_path=tmp_path / "server.log")
    assert summary["problems"] == [], summary["problems"][:5]
    assert summary["answered"] == 40 and summary["latency_ms"]["valid"]["count"] > 0
    assert summary["peak_rss_mb"]["after_run"] < summary["peak_rss_mb"]["after_warmup"] + 500  # memory stays bounded


def test_decoding_work_is_bounded_by_pixels_and_time(detector):
    """A 7 KB 1-bit PNG of 7745 x 7745 is refused by the server's pixel cap before decoding (422),
    and a request not through decoding by its deadline gets 503 (a queue of slow uploads ends)."""
    import io
    import struct
    import time
    import zlib

    from fastapi.testclient import TestClient

    from dldl.data.images import MAX_PIXELS as SERVER_MAX_PIXELS
    from dldl.serve import create_app

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    side = 11_000  # 121 MP, over the one cap
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(b"\x00" + bytes((side + 7) // 8)) for _ in range(side)) + z.flush()
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    assert len(png) < 100_000 and side * side > SERVER_MAX_PIXELS
    with TestClient(create_app(detector=detector)) as client:
        t0 = time.perf_counter()
        r = client.post("/v1/predict", files={"file": ("bomb.png", png, "image/png")})
        assert r.status_code == 422 and f"above the limit of {SERVER_MAX_PIXELS:,}" in r.json()["error"]
        assert time.perf_counter() - t0 < 1.0  # refused from the header, not decoded
    photo = io.BytesIO()
    Image.new("RGB", (64, 64)).save(photo, "PNG")
    with TestClient(create_app(detector=detector, request_timeout_s=0.0)) as client:
        r = client.post("/v1/predict", files={"file": ("late.png", photo.getvalue(), "image/png")})
        assert r.status_code == 503 and r.json()["error"].startswith("server busy: the request")


def test_idle_sockets_cannot_lock_the_server_out_and_its_memory_stays_flat(tmp_path):
    """``dldl serve`` with 256 open files: 300 sockets that send nothing, then a real request is
    answered at once (before: timed out after 30 s, accept() failing with EMFILE and 115 MB of log in
    25 s); then 400 uploads after a warm-up keep its RSS flat (it grew 36 KB an upload: the face
    detector's wheel leaked its result buffer on every call). About 20 s, most of it the server's start."""
    import io

    port = server_load.free_port()
    log_path = tmp_path / "server.log"
    buffer = io.BytesIO()
    Image.new("RGB", (160, 120), (90, 120, 150)).save(buffer, "PNG")
    blank = server_load.Upload("no_face", "blank.png", buffer.getvalue())
    with open(log_path, "w") as log:
        server = server_load.start_server(port, 1.0, log, fd_limit=256)
        try:
            flood = server_load.idle_flood(port, 300, log_path)
            statuses = [server_load.send(port, blank)["status"] for _ in range(100)]  # warm-up
            before = server_load.memory_kb(server.pid)["VmRSS"]
            statuses += [server_load.send(port, blank)["status"] for _ in range(400)]
            grown_mb = (server_load.memory_kb(server.pid)["VmRSS"] - before) / 1024
        finally:
            server.terminate()
            server.wait(30)
    assert flood["idle_sockets"] == 300 and flood["health_status"] == 200 and flood["health_s"] < 3, flood
    assert flood["upload_status"] == 200 and flood["idle_closed_by_server"] >= 150, flood
    assert flood["log_bytes"] < 100_000, flood
    assert statuses == [200] * 500
    assert grown_mb < 6, f"RSS grew {grown_mb:.1f} MB over 400 uploads"


@pytest.fixture
def guarded_server():
    """A uvicorn server in a thread of this process on 127.0.0.1 with :func:`dldl.serve.guarded_protocol`
    and short limits, over an app that reads the body and answers 200; yields ``(port, limits)``."""
    import threading
    import time

    import uvicorn
    from uvicorn.protocols.http.h11_impl import H11Protocol

    from dldl.serve import ServerLimits, guarded_protocol

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    limits = ServerLimits(max_connections=5, header_timeout_s=0.6, body_timeout_s=1.2, keep_alive_s=2)
    port = server_load.free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, http=guarded_protocol(H11Protocol, limits), lifespan="off",
                            log_level="warning", timeout_keep_alive=limits.keep_alive_s)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    yield port, limits
    server.should_exit = True
    thread.join(10)


def _closed_after(sock, limit_s: float) -> float | None:
    """Seconds until the server closes ``sock`` (reads give b''), or None if it stays open ``limit_s``."""
    import socket
    import time

    start = time.monotonic()
    sock.settimeout(0.05)
    while time.monotonic() - start < limit_s:
        try:
            if sock.recv(4096) == b"":
                return time.monotonic() - start
        except socket.timeout:
            continue
        except OSError:
            return time.monotonic() - start
    return None


def test_silent_slow_and_surplus_connections_are_closed(guarded_server):
    """uvicorn has no request-head timeout: a socket that sends nothing, or a head a byte at a time,
    stayed open for ever. Now: closed after ``header_timeout_s``; a body that stops after
    ``body_timeout_s``; beyond ``max_connections`` the one idle longest at once; while a normal
    keep-alive connection serves two requests and any number of quick requests go through."""
    import http.client
    import socket
    import time

    port, limits = guarded_server

    def connect():
        return socket.create_connection(("127.0.0.1", port), timeout=2)

    silent = connect()
    assert limits.header_timeout_s * 0.8 < _closed_after(silent, 5) < limits.header_timeout_s + 1
    slow_head = connect()
    start = time.monotonic()
    for ch in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 30:
        try:
            slow_head.sendall(bytes([ch]))
        except OSError:
            break
        time.sleep(0.1)
    assert time.monotonic() - start < limits.header_timeout_s + 1.5 and _closed_after(slow_head, 2) is not None
    slow_body = connect()
    slow_body.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
    assert limits.body_timeout_s * 0.8 < _closed_after(slow_body, 5) < limits.body_timeout_s + 1

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)  # keep-alive: two requests, one connection
    for _ in range(2):
        conn.request("POST", "/", body=b"x" * 1000)
        assert conn.getresponse().read() == b"ok"
        time.sleep(limits.header_timeout_s / 2)
    idle = [connect() for _ in range(12)]  # 12 silent sockets beside it, 5 kept
    time.sleep(0.3)
    closed = sum(_closed_after(s, 0.05) is not None for s in idle)
    assert closed >= 12 - limits.max_connections, closed
    for _ in range(20):  # quick requests are never the ones closed
        quick = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        quick.request("GET", "/")
        assert quick.getresponse().read() == b"ok"
        quick.close()
    for s in idle + [silent, slow_head, slow_body]:
        s.close()
    conn.close()


def test_the_log_lets_a_few_lines_a_second_through_and_counts_the_rest():
    import logging

    from dldl.serve import LogRateLimit

    now = [100.0]
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    logger = logging.getLogger("dldl.test.flood")
    logger.propagate = False
    handler = Keep()
    limiter = LogRateLimit(5, logger, clock=lambda: now[0])
    handler.addFilter(limiter)
    logger.addHandler(handler)
    try:
        for i in range(1000):
            logger.error("socket.accept() out of system resource %d", i)
        assert len(seen) == 5 and limiter.dropped == 995
        now[0] += 1
        logger.error("next second")
        assert seen[5:] == ["995 log lines dropped (more than 5 a second)", "next second"]
    finally:
        logger.removeHandler(handler)
