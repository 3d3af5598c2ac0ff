"""``dldl serve``: a small web demo and JSON API over :class:`~dldl.predictor.Predictor`.

:func:`create_app` loads the models and the face detector once, then serves

* ``GET /``: the demo page (``assets/web/index.html``; it loads nothing from outside);
* ``POST /v1/predict?task=age``: a multipart photo upload (field ``file``) -> one entry of
  ``dldl predict --json`` (``{"path", "faces", "error"}``), each face with its predicted distribution;
* ``GET /v1/health``, ``GET /v1/models``, ``GET /v1/samples`` (the bundled photos, each at
  ``/samples/NAME``); the OpenAPI schema at ``/openapi.json`` and a
  self-contained reference page built from it at ``/docs`` (not Swagger UI, which loads from a CDN).

Every failure is the same JSON shape with ``faces: []`` and a one-line ``error``, never a traceback:
413 for a request body above ``max_upload_bytes``, 422 for an upload that is not a readable image
(empty, truncated, unknown format, more pixels than ``dldl.data.images.MAX_PIXELS``) or a malformed
request, 503 when ``max_pending`` requests already wait or a request is not through decoding
``request_timeout_s`` after it arrived. Photos over ``dldl.data.images.MAX_PIXELS`` are refused from their header, and larger than ``WORKING_PIXELS`` decoded smaller, as everywhere. Inference is CPU-bound: decoding and
prediction run one request at a time in a worker thread, so memory stays bounded under load.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import resource
import threading
import time
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Literal

from anyio import CapacityLimiter, to_thread
from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException

from dldl import __version__
from dldl.assets import PHOTOS_DIR, WEB_DIR
from dldl.data.images import MAX_PIXELS
from dldl.errors import DataError
from dldl.hub import load
from dldl.predictor import TASKS, Predictor
from dldl.results import ESTIMATE, FIELDS

MAX_UPLOAD_BYTES = 10_000_000
REQUEST_TIMEOUT_S = 10.0
# the page may use only what the server sends it (and the photo the user picked, as a blob: URL)
PAGE_CSP = "default-src 'self'; img-src 'self' blob: data:; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'"


@dataclasses.dataclass(frozen=True)
class ServerLimits:
    """What one ``dldl serve`` process allows its clients; :func:`run` applies them (the README's
    serve paragraph and docs/RELIABILITY.md list them too).

    Attributes:
        max_connections: open connections kept; one more closes the connection that has waited longest
            without a request in progress (idle, or still sending its request head), so idle sockets
            cannot lock the server out. Kept below the process's open-file limit (:func:`run`).
        backlog: connections waiting to be accepted (the listen queue); the event loop accepts at most
            this many at once, so a burst cannot run the process out of file descriptors before the
            oldest idle ones are closed.
        header_timeout_s: a connection must send a complete request head this long after it opens, or
            after its previous answer (uvicorn has no such timeout: a silent socket stayed open for ever).
        body_timeout_s: ... and the rest of the request (the upload) this long after its head.
        keep_alive_s: an idle keep-alive connection is closed after this (uvicorn's ``timeout_keep_alive``).
        limit_concurrency: connections plus requests in progress beyond which uvicorn answers 503.
        max_head_bytes: the largest request head (uvicorn's ``h11_max_incomplete_event_size``); a larger one gets 400.
        graceful_shutdown_s: on Ctrl-C or SIGTERM, requests in progress get this long to finish.
        log_lines_per_s: log lines let through a second; the rest are counted, and one line says how many were dropped.
    """

    max_connections: int = 100
    backlog: int = 64
    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    keep_alive_s: int = 5
    limit_concurrency: int = 128
    max_head_bytes: int = 16 * 1024
    graceful_shutdown_s: int = 10
    log_lines_per_s: int = 50


class LogRateLimit(logging.Filter):
    """A logging filter that lets ``per_second`` records a second through and counts the rest; the
    next second that passes any says how many were dropped, in one line on ``summary`` (a flood of
    failing connections wrote 115 MB of log in 25 s). ``dropped`` counts every record held back;
    ``clock`` gives the seconds (``time.monotonic``)."""

    SUMMARY = "dldl_log_summary"

    def __init__(self, per_second: int, summary: logging.Logger, clock: Any = time.monotonic) -> None:
        super().__init__()
        self.per_second, self.summary, self.clock = per_second, summary, clock
        self.second, self.passed, self.pending, self.dropped = 0, 0, 0, 0
        self.lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, self.SUMMARY, False):
            return True
        report = 0
        with self.lock:
            now = int(self.clock())
            if now != self.second:
                self.second, self.passed = now, 0
            if self.passed >= self.per_second:
                self.pending += 1
                self.dropped += 1
                return False
            self.passed += 1
            report, self.pending = self.pending, 0
        if report:
            self.summary.warning("%s log lines dropped (more than %s a second)", f"{report:,}", self.per_second,
                                 extra={self.SUMMARY: True})
        return True


def guarded_protocol(base: type, limits: ServerLimits) -> type:
    """``base`` (uvicorn's HTTP protocol class) with the connection limits of ``limits``: a request
    head (and then its body) must arrive within its timeout, and beyond ``max_connections`` the
    connection waiting longest for a request head is closed. The subclass reads only what uvicorn's
    h11 and httptools protocols share (``cycle``, ``more_body``, ``response_complete``, ``transport``)."""
    waiting: dict[Any, float] = {}  # connection -> when it began waiting for a request head (monotonic), insertion-ordered
    open_: set[Any] = set()

    class Guarded(base):  # type: ignore[misc, valid-type]
        _seen: Any = None  # the last request cycle whose head was read
        _phase: str | None = None  # what the connection must send next: "head", "body", or nothing (its request runs)
        _timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            open_.add(self)
            self._await_head()
            if len(open_) > limits.max_connections:
                oldest = min((c for c in waiting if c is not self), key=waiting.__getitem__, default=None)
                if oldest is not None:
                    oldest._close()

        def connection_lost(self, exc: Exception | None) -> None:
            open_.discard(self)
            waiting.pop(self, None)
            self._cancel()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._track()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._await_head()
                self._track()  # a pipelined request may have been read already

        def _track(self) -> None:
            """Move on when the parser has read a new request's head (a new cycle), then its body."""
            cycle = self.cycle
            if cycle is not None and cycle is not self._seen:  # the head is in: the app has the request
                self._seen = cycle
                waiting.pop(self, None)
                self._phase = "body" if cycle.more_body else None
                if cycle.more_body:
                    self._deadline(limits.body_timeout_s)
                else:
                    self._cancel()
            elif self._phase == "body" and not cycle.more_body:  # and now its body
                self._phase = None
                self._cancel()

        def _await_head(self) -> None:
            waiting[self] = time.monotonic()
            self._phase = "head"
            self._deadline(limits.header_timeout_s)

        def _deadline(self, seconds: float) -> None:
            self._cancel()
            self._timer = self.loop.call_later(seconds, self._close)

        def _cancel(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _close(self) -> None:
            self._cancel()
            waiting.pop(self, None)
            if not self.transport.is_closing():
                self.transport.close()

    Guarded.__name__ = Guarded.__qualname__ = f"Guarded{base.__name__}"
    return Guarded


FILES_RESERVED = 64
"""Open files a server needs besides its connections: model files, the log, the listening socket, ONNX Runtime's."""


def fit_open_file_limit(limits: ServerLimits) -> ServerLimits:
    """``limits`` made to fit this process's open-file limit: the soft limit is raised (up to the hard
    one) to hold ``max_connections`` plus a ``backlog`` being accepted plus :data:`FILES_RESERVED`, and
    where it cannot be, fewer connections are kept (with 256 files: 128)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = limits.max_connections + limits.backlog + FILES_RESERVED
    if soft != resource.RLIM_INFINITY and soft < want:
        soft = want if hard == resource.RLIM_INFINITY else min(hard, want)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        except (ValueError, OSError):
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        return dataclasses.replace(limits, max_connections=max(1, min(limits.max_connections, soft - limits.backlog - FILES_RESERVED)))
    return limits


def run(app: Any, host: str, port: int, limits: ServerLimits = ServerLimits()) -> None:
    """Serve ``app`` with uvicorn on ``host:port`` under ``limits`` until Ctrl-C or SIGTERM."""
    import uvicorn
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    limits = fit_open_file_limit(limits)
    config = uvicorn.Config(app, host=host, port=port, log_level="info", http=guarded_protocol(AutoHTTPProtocol, limits),
                            backlog=limits.backlog, timeout_keep_alive=limits.keep_alive_s, limit_concurrency=limits.limit_concurrency,
                            h11_max_incomplete_event_size=limits.max_head_bytes,
                            timeout_graceful_shutdown=limits.graceful_shutdown_s)
    summary = logging.getLogger("uvicorn.error")
    limiter = LogRateLimit(limits.log_lines_per_s, summary)
    for name in ("uvicorn", "uvicorn.access"):  # records of uvicorn.error reach the handlers of uvicorn
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(limiter)
    logging.getLogger("asyncio").addFilter(limiter)  # e.g. "socket.accept() out of system resource", once a loop turn
    uvicorn.Server(config).run()


def _schema_models() -> tuple[type[BaseModel], type[BaseModel]]:
    """The server's ``Face`` and ``Result`` models, derived from :data:`dldl.results.FIELDS` (one
    schema for the JSON, the CSV and the API): every face field, the estimate under each task's name."""
    from pydantic import Field as Described
    from pydantic import create_model

    def props(level: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in FIELDS:
            if f.level != level or f.name == "faces":
                continue
            names = [f.name.format(task=task) for task in TASKS] if f.name == ESTIMATE else [f.name]
            for name in names:
                optional = f.when is not None or f.name == ESTIMATE
                kind = (f.type | None) if optional else f.type
                note = f"{f.description} (only for: {f.when})" if f.when else f.description
                out[name] = (kind, Described(None if optional else ..., description=note))
        return out

    face = create_model("Face", __config__=ConfigDict(extra="allow"), **props("face"))
    face.__doc__ = "One face (dldl.results.FIELDS): the estimate under the task's name, and its predicted distribution."
    result = create_model("Result", faces=(list[face], Described(..., description="the faces found, largest first")),
                          **props("photo"))
    result.__doc__ = "One photo, like an entry of ``dldl predict --json``; on failure ``faces`` is empty and ``error`` says why."
    return face, result


Face, Result = _schema_models()


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes (by its Content-Length, or by the bytes
    read so far) raises ``HTTPException(413)`` while the app reads it, so the app's handler words the reply."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = Headers(scope=scope).get("content-length", "")
        received = 0

        async def limited_receive() -> dict:
            nonlocal received
            if declared.isdigit() and int(declared) > self.limit:
                raise HTTPException(413)
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise HTTPException(413)
            return message

        await self.app(scope, limited_receive, send)


def _error(status: int, reason: str, path: str | None = None) -> JSONResponse:
    """A failed request as a result: every photo field of the schema, no faces, one ``error`` line."""
    body = {f.name: None for f in FIELDS if f.level == "photo"} | {"path": path, "faces": [], "error": reason}
    return JSONResponse(body, status_code=status)


def _predict_upload(predictor: Predictor, upload: BinaryIO, name: str, deadline: float) -> JSONResponse:
    """Decode an upload (:meth:`Predictor.load`: the checks of a file, and the server's pixel cap)
    and predict; runs in the worker thread. A request still waiting at its ``deadline``
    (``time.monotonic()``), or still decoding then, gets 503, so slow uploads cannot pile up behind each other."""
    if time.monotonic() > deadline:
        return _error(503, "server busy: the request waited past its time limit; retry shortly", name)
    try:
        path, image, scale = predictor.load(upload, name)
        if time.monotonic() > deadline:
            return _error(503, "server busy: the request ran past its time limit; retry shortly", name)
        result = predictor.result(image, path, scale)
    except DataError as e:
        return _error(422, f"{name}: {e.problem}", name)
    return JSONResponse(result.to_dict(distribution=True))


def _code(text: str) -> str:
    """Docstring markup (``code``, `code`) as HTML ``<code>``, so /docs shows no raw backticks.

    >>> _code("a ``dldl predict --json`` entry and `x`")
    'a <code>dldl predict --json</code> entry and <code>x</code>'
    """
    import re

    return re.sub(r"``(.+?)``|`(.+?)`", lambda m: f"<code>{m[1] or m[2]}</code>", text)


def _docs_page(schema: dict[str, Any]) -> str:
    """The API reference as one HTML page that loads nothing: each route, its parameters and answers."""
    from html import escape

    rows = []
    for path, ops in schema.get("paths", {}).items():
        for method, op in ops.items():
            params = ", ".join(f"{p['name']} ({p.get('in', '')})" for p in op.get("parameters", []))
            if "requestBody" in op:
                params = ", ".join(filter(None, [params, "multipart form field 'file' (the photo)"]))
            answers = "; ".join(f"{code}: {r.get('description', '')}" for code, r in op.get("responses", {}).items())
            rows.append(f"<tr><td><code>{escape(method.upper())} {escape(path)}</code></td><td>{escape(op.get('summary', ''))}"
                        f"<br><small>{_code(escape(op.get('description', '') or ''))}</small></td><td>{escape(params)}</td>"
                        f"<td><small>{escape(answers)}</small></td></tr>")
    info = schema.get("info", {})
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(info.get('title', ''))} API</title>"
            "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:.4em;vertical-align:top;text-align:left}</style></head><body>"
            f"<h1>{escape(info.get('title', ''))} {escape(str(info.get('version', '')))} API</h1>"
            f"<p>{_code(escape(info.get('description', '')))}</p><p>The machine-readable schema: <a href='/openapi.json'>/openapi.json</a> "
            "(this page is built from it and loads nothing from outside).</p>"
            "<table><tr><th>route</th><th>what</th><th>parameters</th><th>answers</th></tr>"
            + "".join(rows) + "</table></body></html>")


def create_app(models: dict[str, str] | None = None, detector: Any | None = None,
               max_upload_bytes: int = MAX_UPLOAD_BYTES, max_pending: int = 32,
               max_pixels: int = MAX_PIXELS, request_timeout_s: float = REQUEST_TIMEOUT_S) -> FastAPI:
    """The web app.

    Args:
        models: task (``"age"`` / ``"beauty"``) -> shipped model name or model file, loaded once with
            :func:`dldl.load`; the first is the default task. Default: the shipped age model.
        detector: a face detector (default ``dldl.faces.get_detector()``).
        max_upload_bytes: the largest accepted request body (the photo plus a few hundred bytes of form).
        max_pending: requests allowed to wait for the worker; more are refused with 503.
        max_pixels: the largest photo decoded (width x height); larger ones get 422 before decoding.
        request_timeout_s: a request not through decoding this long after it arrived gets 503.
    """
    if detector is None:
        from dldl.faces import get_detector

        detector = get_detector()

    models = models or {"age": TASKS["age"]}
    predictors = {task: Predictor(load(name, runtime="auto"), detector, max_pixels=max_pixels) for task, name in models.items()}
    worker = CapacityLimiter(1)  # one inference at a time: torch and the detector are not shared safely
    pending = {"count": 0}  # touched only on the event loop
    # no Swagger UI / ReDoc: both load their scripts from a CDN and are blank offline; /docs is a
    # self-contained page built from the OpenAPI schema (/openapi.json)
    app = FastAPI(title="dldl", version=__version__, docs_url=None, redoc_url=None,
                  description="Facial age and attractiveness estimation (DLDL-v2). Upload a photo to `POST /v1/predict`.")
    app.add_middleware(BodyLimit, limit=max_upload_bytes)
    errors: dict[int | str, dict[str, Any]] = {
        400: {"model": Result, "description": "malformed request body (e.g. broken multipart data)"},
        413: {"model": Result, "description": f"request body above {max_upload_bytes:,} bytes"},
        422: {"model": Result, "description": "not a readable image, too many pixels, or a malformed request"},
        503: {"model": Result, "description": "too many requests waiting, or the request passed its time limit; retry"}}

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 413:
            return _error(413, f"upload too large: the request body is over the limit of {max_upload_bytes:,} bytes")
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        if tuple(first["loc"]) == ("body", "file"):
            return _error(422, "no photo: send it as the multipart form field 'file' (a file upload)")
        where = ".".join(str(part) for part in first["loc"])
        return _error(422, f"{where}: {first['msg']}" if where else str(first["msg"]))

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:  # the traceback goes to the server log only
        return _error(500, f"internal error ({type(exc).__name__}); see the server log")

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html", headers={"Content-Security-Policy": PAGE_CSP})

    @app.get("/favicon.svg", include_in_schema=False)
    async def favicon() -> FileResponse:
        return FileResponse(WEB_DIR / "favicon.svg", media_type="image/svg+xml")

    sample_photos = {p.name: p for p in sorted(PHOTOS_DIR.glob("*.jpg"))}

    @app.get("/v1/samples")
    async def samples() -> list[str]:
        """The bundled sample photos (``GET /samples/NAME`` serves each), for the page's "try a sample photo"."""
        return list(sample_photos)

    @app.get("/samples/{name}", include_in_schema=False)
    async def sample(name: str) -> FileResponse:
        if name not in sample_photos:  # only the bundled files, never a path
            raise HTTPException(404, f"no sample photo {name!r}")
        return FileResponse(sample_photos[name], media_type="image/jpeg")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(_docs_page(app.openapi()), headers={"Content-Security-Policy": PAGE_CSP})

    @app.get("/v1/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "tasks": list(predictors), "pending": pending["count"], "max_pending": max_pending}

    @app.get("/v1/models")
    async def served_models() -> dict[str, dict[str, Any]]:
        """Task -> the model serving it: name, task, label set and input size."""
        return {task: {"model": models[task], "task": p.estimator.task, "labels": dataclasses.asdict(p.estimator.labels),
                       "input_size": p.estimator.input_size} for task, p in predictors.items()}

    @app.post("/v1/predict", response_model=Result, responses=errors)
    async def predict(file: Annotated[UploadFile, File(description="A photo (JPEG, PNG, WebP, BMP...).")],
                      task: Annotated[Literal["age", "beauty"] | None, Query(description="Default: the first served task.")] = None,
                      ) -> JSONResponse:
        """Detect every face in the photo and estimate it; each face comes with its predicted distribution."""
        name = Path(file.filename or "upload").name
        task = task or next(iter(predictors))
        if task not in predictors:
            return _error(422, f"task {task!r} is not served here (serving: {', '.join(predictors)})", name)
        if pending["count"] >= max_pending:
            return _error(503, f"server busy: {max_pending} requests are already waiting; retry shortly", name)
        pending["count"] += 1
        deadline = time.monotonic() + request_timeout_s
        try:
            return await to_thread.run_sync(_predict_upload, predictors[task], file.file, name, deadline, limiter=worker)
        finally:
            pending["count"] -= 1

    return app
