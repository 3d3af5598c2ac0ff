"""Load test of ``dldl serve``: N requests from C concurrent clients, mixed valid photos and invalid uploads.

Starts ``dldl serve`` as a subprocess on a free port and checks that every request gets an answer (no
connection error), every valid photo a 200 with faces, and every invalid upload (random bytes, empty,
truncated JPEG, over the upload cap, over the pixel cap, no file field) a 4xx with a JSON ``error``.
Records latency p50/p99/max for valid and invalid requests, throughput, and the server's peak RSS
(``VmHWM``) after warm-up and after the run. Exit status 1 if any check failed.

    OMP_NUM_THREADS=1 python benchmarks/server_load.py --requests 500 --clients 16 --json load.json

``--idle-sockets N`` (with ``--fd-limit``) first opens N sockets that send nothing, then times a real
request (it must be answered), and reports how many idle sockets the server closed and how much it
logged; ``--memory-requests N`` then sends N photos one by one and samples the server's RSS every
``--memory-every`` requests (a leak grows without end, a cache or an allocator's arenas level off):

    python benchmarks/server_load.py --requests 0 --idle-sockets 300 --fd-limit 256 --memory-requests 4000 --json serve_limits.json
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PHOTOS_DIR = Path(__file__).resolve().parents[1] / "src" / "dldl" / "assets" / "photos"


@dataclass
class Upload:
    kind: str  # "valid" or the kind of invalid upload
    filename: str | None  # None: the form has no file field
    data: bytes

    @property
    def valid(self) -> bool:
        return self.kind == "valid"


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width x height`` pixels but holds none: trips the pixel cap without a large file."""
    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


def uploads(max_upload_bytes: int, seed: int = 0) -> list[Upload]:
    """The bundled photos (valid) and one upload of each invalid kind."""
    rng = random.Random(seed)
    photos = sorted(PHOTOS_DIR.glob("*.jpg"))
    jpeg = photos[0].read_bytes()
    return [*(Upload("valid", p.name, p.read_bytes()) for p in photos),
            Upload("random_bytes", "noise.jpg", rng.randbytes(4096)),
            Upload("empty", "empty.jpg", b""),
            Upload("truncated_jpeg", "truncated.jpg", jpeg[: len(jpeg) // 3]),
            Upload("oversize", "huge.jpg", jpeg + rng.randbytes(max_upload_bytes)),
            Upload("too_many_pixels", "bomb.png", png_header(20_000, 20_000)),
            Upload("no_file_field", None, b"")]


def multipart(upload: Upload) -> tuple[bytes, str]:
    """The ``multipart/form-data`` body and Content-Type of one upload (field ``file``)."""
    boundary = uuid.uuid4().hex
    if upload.filename is None:
        part = b'Content-Disposition: form-data; name="note"\r\n\r\nno file here'
    else:
        part = (f'Content-Disposition: form-data; name="file"; filename="{upload.filename}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n").encode() + upload.data
    body = f"--{boundary}\r\n".encode() + part + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def send(port: int, upload: Upload, timeout: float = 300.0, task: str | None = None) -> dict:
    """POST one upload (for ``task``, default the server's first) on a fresh connection; the
    status, JSON body (or the failure) and latency."""
    body, content_type = multipart(upload)
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/v1/predict" + (f"?task={task}" if task else ""), body, {"Content-Type": content_type})
        response = conn.getresponse()
        status, raw = response.status, response.read()
    except (OSError, http.client.HTTPException) as e:
        return {"kind": upload.kind, "status": None, "latency_s": time.perf_counter() - start,
                "failure": f"connection error: {type(e).__name__}: {e}"}
    finally:
        conn.close()
    record = {"kind": upload.kind, "status": status, "latency_s": time.perf_counter() - start}
    try:
        record["json"] = json.loads(raw)
    except ValueError:
        record["failure"] = f"HTTP {status} with a body that is not JSON: {raw[:80]!r}"
    return record


def problem(record: dict) -> str | None:
    """What is wrong with one answered request, or None."""
    if "failure" in record:
        return record["failure"]
    status, answer = record["status"], record["json"]
    if record["kind"] == "valid":
        ok = status == 200 and answer.get("error") is None and len(answer.get("faces", [])) >= 1
        return None if ok else f"valid photo: HTTP {status} {answer}"
    if not 400 <= status < 500 or not isinstance(answer.get("error"), str) or not answer["error"]:
        return f"{record['kind']}: expected a 4xx with a JSON error, got HTTP {status} {answer}"
    if "Traceback" in answer["error"]:
        return f"{record['kind']}: traceback in the response"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def memory_kb(pid: int) -> dict[str, int]:
    """``VmHWM`` (peak resident set) and ``VmRSS`` of a process, in kB (Linux ``/proc``)."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {key: int(fields[key].split()[0]) for key in ("VmHWM", "VmRSS")}


def start_server(port: int, max_upload_mb: float, log, timeout: float = 180.0, fd_limit: int | None = None,
                 command: list[str] | None = None) -> subprocess.Popen:
    """``dldl serve`` (or ``command``) on ``port`` (stdout and stderr into the open file ``log``), with
    at most ``fd_limit`` open files, once ``/v1/health`` answers."""
    import resource

    command = command or [sys.executable, "-m", "dldl.cli", "serve", "--port", str(port), "--max-upload-mb", str(max_upload_mb)]
    limit = None if fd_limit is None else (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, fd_limit)))
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={"OMP_NUM_THREADS": "1", **os.environ},
                              preexec_fn=limit)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"dldl serve exited with status {server.returncode}; see {log.name}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/v1/health")
            if conn.getresponse().status == 200:
                return server
        except OSError:
            time.sleep(0.3)
    server.kill()
    raise RuntimeError(f"dldl serve did not answer within {timeout:.0f} s; see {log.name}")


def idle_flood(port: int, sockets: int, log_path: Path, wait_s: float = 0.0) -> dict:
    """Open ``sockets`` connections that send nothing, then time a ``GET /v1/health`` and a photo
    upload; after ``wait_s`` more seconds, count the idle sockets the server has closed. The log's
    growth over the flood comes with it. The idle sockets are closed before returning."""
    import select

    before = log_path.stat().st_size
    idle = []
    try:
        for _ in range(sockets):
            s = socket.socket()
            s.settimeout(5)
            try:
                s.connect(("127.0.0.1", port))
            except OSError:  # the backlog is full: the flood has done what it can
                s.close()
                break
            idle.append(s)
        photo = Upload("valid", sorted(PHOTOS_DIR.glob("*.jpg"))[0].name, sorted(PHOTOS_DIR.glob("*.jpg"))[0].read_bytes())
        start = time.perf_counter()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", "/v1/health")
            health = conn.getresponse().status
        except OSError as e:
            health = f"{type(e).__name__}: {e}"
        health_s = time.perf_counter() - start
        upload = send(port, photo, timeout=30)
        time.sleep(wait_s)
        readable, _, _ = select.select(idle, [], [], 0)
        closed = sum(1 for s in readable if not s.recv(1))  # readable with no data: closed by the server
    finally:
        for s in idle:
            s.close()
    return {"idle_sockets": len(idle), "health_status": health, "health_s": round(health_s, 3),
            "upload_status": upload["status"], "upload_s": round(upload["latency_s"], 3),
            "idle_closed_by_server": closed, "log_bytes": log_path.stat().st_size - before}


def memory_curve(port: int, pid: int, requests: int, every: int = 100) -> list[dict]:
    """Send ``requests`` photo uploads one at a time; the server's RSS (and peak) every ``every``."""
    photos = [Upload("valid", p.name, p.read_bytes()) for p in sorted(PHOTOS_DIR.glob("*.jpg"))]
    rows = [{"requests": 0, **{k.lower(): v / 1024 for k, v in memory_kb(pid).items()}}]
    for i in range(1, requests + 1):
        record = send(port, photos[i % len(photos)])
        if record.get("status") != 200:
            raise RuntimeError(f"request {i}: {problem(record) or record.get('status')}")
        if i % every == 0 or i == requests:
            rows.append({"requests": i, **{k.lower(): v / 1024 for k, v in memory_kb(pid).items()}})
    return rows


def latency_ms(records: list[dict]) -> dict[str, float | int]:
    lat = np.array([r["latency_s"] for r in records]) * 1000
    if not len(lat):
        return {"count": 0}
    return {"count": len(lat), "p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)), "max": float(lat.max())}


def run(requests: int = 500, clients: int = 16, max_upload_mb: float = 1.0, valid_fraction: float = 0.5,
             seed: int = 0, log_path: Path = Path(tempfile.gettempdir()) / "dldl_server_load.log",
             idle_sockets: int = 0, fd_limit: int | None = None, memory_requests: int = 0, memory_every: int = 100) -> dict:
    """Start ``dldl serve``, warm it up, fire ``requests`` uploads from ``clients`` threads (after an
    :func:`idle_flood` of ``idle_sockets``, before a :func:`memory_curve` of ``memory_requests``); the summary."""
    kinds = uploads(int(max_upload_mb * 1e6), seed)
    valid, invalid = [u for u in kinds if u.valid], [u for u in kinds if not u.valid]
    rng = random.Random(seed)
    plan = [rng.choice(valid) if rng.random() < valid_fraction else rng.choice(invalid) for _ in range(requests)]
    port = free_port()
    flood, curve = None, []
    with open(log_path, "w") as log:
        server = start_server(port, max_upload_mb, log, fd_limit=fd_limit)
        try:
            warmup = [send(port, u) for u in valid]
            if idle_sockets:
                flood = idle_flood(port, idle_sockets, log_path)
            before = memory_kb(server.pid)
            start = time.perf_counter()
            with ThreadPoolExecutor(max(clients, 1)) as pool:
                records = list(pool.map(lambda u: send(port, u), plan))
            wall = time.perf_counter() - start
            after = memory_kb(server.pid)
            if memory_requests:
                curve = memory_curve(port, server.pid, memory_requests, memory_every)
            alive = server.poll() is None
        finally:
            server.terminate()
            server.wait(30)
    problems = [p for p in map(problem, warmup + records) if p]
    if not alive:
        problems.append("the server died during the run")
    if flood and (flood["health_status"] != 200 or flood["upload_status"] != 200):
        problems.append(f"after {flood['idle_sockets']} idle sockets: health {flood['health_status']}, upload {flood['upload_status']}")
    statuses: dict[str, dict[str, int]] = {}
    for r in records:
        counts = statuses.setdefault(r["kind"], {})
        counts[str(r["status"])] = counts.get(str(r["status"]), 0) + 1
    return {"requests": requests, "clients": clients, "answered": sum(r["status"] is not None for r in records),
            "wall_s": wall, "throughput_rps": requests / max(wall, 1e-9), "idle_flood": flood, "memory_curve": curve,
            "latency_ms": {"valid": latency_ms([r for r in records if r["kind"] == "valid"]),
                           "invalid": latency_ms([r for r in records if r["kind"] != "valid"])},
            "statuses": statuses, "peak_rss_mb": {"after_warmup": before["VmHWM"] / 1024, "after_run": after["VmHWM"] / 1024},
            "rss_mb_after_run": after["VmRSS"] / 1024, "problems": problems}


def markdown(summary: dict) -> str:
    lat = summary["latency_ms"]
    rows = [f"| {name} | {v['count']} | {v.get('p50', 0):.0f} | {v.get('p99', 0):.0f} | {v.get('max', 0):.0f} |"
            for name, v in lat.items()]
    rss = summary["peak_rss_mb"]
    return "\n".join([
        f"{summary['requests']} requests from {summary['clients']} clients: {summary['answered']} answered, "
        f"{summary['throughput_rps']:.1f} requests/s, {len(summary['problems'])} problems",
        "", "| requests | count | p50 ms | p99 ms | max ms |", "| --- | ---: | ---: | ---: | ---: |", *rows, "",
        f"server peak RSS (VmHWM): {rss['after_warmup']:.0f} MB after warm-up, {rss['after_run']:.0f} MB after the run",
        "statuses by kind: " + ", ".join(f"{k} {v}" for k, v in sorted(summary["statuses"].items())),
        *([f"idle flood: {json.dumps(summary['idle_flood'])}"] if summary.get("idle_flood") else []),
        *(["", "| requests | RSS MB | peak MB |", "| ---: | ---: | ---: |",
           *(f"| {r['requests']} | {r['vmrss']:.0f} | {r['vmhwm']:.0f} |" for r in summary["memory_curve"])]
          if summary.get("memory_curve") else [])])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--max-upload-mb", type=float, default=1.0, help="the server's upload cap (oversize uploads exceed it)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the summary here")
    parser.add_argument("--log", type=Path, default=Path(tempfile.gettempdir()) / "dldl_server_load.log", help="the server's log")
    parser.add_argument("--idle-sockets", type=int, default=0, help="first open this many sockets that send nothing")
    parser.add_argument("--fd-limit", type=int, help="the server's open-file limit (e.g. 256)")
    parser.add_argument("--memory-requests", type=int, default=0, help="then send this many photos one by one, sampling RSS")
    parser.add_argument("--memory-every", type=int, default=100)
    args = parser.parse_args(argv)
    summary = run(args.requests, args.clients, args.max_upload_mb, seed=args.seed, log_path=args.log,
                  idle_sockets=args.idle_sockets, fd_limit=args.fd_limit, memory_requests=args.memory_requests,
                  memory_every=args.memory_every)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=1))
    print(markdown(summary))
    for p in summary["problems"][:20]:
        print("problem:", p)
    return 1 if summary["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
