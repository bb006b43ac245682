"""The Emulator's HTTP routes, answering as EvoLink documents (see evolink-api.md)."""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
from aiohttp import web

from ._callbacks import is_local_or_private
from ._family import FAMILY, validate_family
from ._faults import Fault, envelope
from ._files import send_file
from ._state import Account, EmuTask, body_digest, presigned_query
from ._validate import MODEL, BodyError, validate_body

if TYPE_CHECKING:
    from ._emulator import Emulator

GENERATED = frozenset({MODEL, *FAMILY})
KNOWN_MODELS = GENERATED | {"kling-o3-reference-to-video", "kling-o3-video-edit",
                            "kling-v2.6-motion-control", "kling-o1-image-to-video"}
MAX_UPLOAD = 100 * 1024 * 1024
_IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9._-]{16,96}$")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(status: int, code: str | None = None, message: str | None = None,
          type_: str | None = None, param: str | None = None,
          retry_after: float | None = None) -> web.Response:
    """A JSON error answer in the current documented envelope."""
    headers = {} if retry_after is None else {"Retry-After": format_seconds(retry_after)}
    return web.json_response(envelope(status, code, message, type_, param), status=status,
                             headers=headers)


def format_seconds(seconds: float) -> str:
    """Retry-After value: whole seconds when that is exact, else a decimal (scaled time)."""
    if seconds >= 1 and float(seconds).is_integer():
        return str(int(seconds))
    return f"{max(seconds, 0.001):.3f}"


class Routes:
    """Request handlers bound to one Emulator."""

    def __init__(self, emulator: Emulator) -> None:
        self.emu = emulator
        self.world = emulator.world

    def app(self) -> web.Application:
        """Build the aiohttp application with the counting middleware."""
        app = web.Application(middlewares=[self._count], client_max_size=4 * 1024 * 1024)
        app.router.add_post("/v1/videos/generations", self.create)
        app.router.add_get("/v1/tasks/{task_id}", self.get_task)
        app.router.add_post("/v1/tasks/batch", self.batch)
        app.router.add_get("/v1/tasks", self.list_tasks)
        app.router.add_get("/v1/credits", self.credits)
        app.router.add_get("/files/{name}", self.file)
        app.router.add_get("/_emulator/timeline", self.timeline)
        app.router.add_post("/api/v1/files/upload/base64", self.upload)
        app.router.add_get("/uploads/{name}", self.uploaded)
        app.router.add_get("/_emulator/statistics", self.statistics)
        return app

    @web.middleware
    async def _count(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        transport = request.transport
        if transport is not None:
            self.world.peers.add(transport.get_extra_info("peername"))
            self.world.transports.add(transport)
            open_now = sum(1 for t in self.world.transports if not t.is_closing())
            self.world.peak_connections = max(self.world.peak_connections, open_now)
        self.emu.settle()
        route = _route_name(request)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            response = exc
        self.world.requests[(route, response.status)] += 1
        self.emu.request_seq += 1
        if not response.prepared:
            response.headers["x-request-id"] = f"req-{self.emu.request_seq:08x}"
        return response

    # -- shared steps ---------------------------------------------------------------------

    def _account(self, request: web.Request,
                 limit_type: str = "rate_limit_error") -> Account | web.Response:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return error(401, message="Authentication required")
        account = self.world.accounts.get(header.removeprefix("Bearer ").strip())
        if account is None:
            return error(401)
        wait = self.world.take_rate_token(account, time.monotonic())
        if wait is not None:
            return error(429, type_=limit_type, retry_after=wait)
        return account

    async def _misbehave(self, request: web.Request, fault: Fault,
                         payload: dict[str, Any] | None) -> web.StreamResponse:
        if fault.kind == "error":
            if fault.legacy_envelope:
                body = envelope(fault.status, message=None)
                body["error"]["code"] = fault.status  # type: ignore[index]
                body["error"]["fallback_suggestion"] = "retry after 30 seconds"  # type: ignore[index]
                headers = ({} if fault.retry_after is None
                           else {"Retry-After": format_seconds(fault.retry_after)})
                return web.json_response(body, status=fault.status, headers=headers)
            return error(fault.status, code=fault.code, retry_after=fault.retry_after)
        if fault.kind == "body":
            return web.Response(status=fault.status, body=fault.body,
                                content_type="application/json")
        if fault.kind == "html":
            page = f"<html><body><h1>{fault.status} Bad Gateway</h1><hr>nginx</body></html>"
            return web.Response(status=fault.status, text=page, content_type="text/html")
        data = json.dumps(payload or {"id": "task-unified-0-truncated", "status": "pending"})
        if fault.kind == "malformed":
            return web.Response(status=200, text=data[: len(data) // 2],
                                content_type="application/json")
        if fault.kind == "slow":
            await anyio.sleep(fault.seconds)
            return web.json_response(payload or {})
        response = web.StreamResponse(status=200, headers={
            "Content-Type": "application/json", "Content-Length": str(len(data))})
        await response.prepare(request)
        await response.write(data[: len(data) // 2].encode())
        if request.transport is not None:
            request.transport.abort()
        return response

    def _json(self, task: EmuTask) -> dict[str, Any]:
        return self.world.snapshot(task, self.emu.url)

    # -- routes ---------------------------------------------------------------------------

    async def create(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/videos/generations``."""
        account = self._account(request)
        if isinstance(account, web.Response):
            return account
        fault = self.emu.faults.draw("create")
        if fault is not None and not fault.after_commit:
            return await self._misbehave(request, fault, None)
        key = request.headers.get("Idempotency-Key")
        if key is not None and not _IDEMPOTENCY_KEY.match(key):
            return error(400, message="Idempotency-Key must be 16-96 characters of "
                         "[A-Za-z0-9._-]", param="Idempotency-Key")
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return error(400, message="Request body is not valid JSON", param="body")
        if not isinstance(body, dict):
            return error(400, message="Request body must be a JSON object", param="body")
        self.emu.received.append(body)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return error(400, message="model is required", param="model")
        if model not in KNOWN_MODELS:
            return error(404, code="model_not_found", message="Specified model not found",
                         type_="not_found_error", param="model")
        if account.models is not None and model not in account.models:
            return error(403, code="model_access_denied",
                         message=f"Token does not have access to model: {model}")
        digest = body_digest(body)
        if key is not None and (account.key, key) in self.world.idempotency:
            seen_digest, task_id = self.world.idempotency[(account.key, key)]
            if seen_digest != digest:
                return error(409, code="idempotency_conflict",
                             message="Idempotency-Key was already used with a different body",
                             type_="invalid_request_error", param="Idempotency-Key")
            self.world.replays += 1
            replay = self._json(self.world.tasks[task_id])
            if fault is not None:
                return await self._misbehave(request, fault, replay)
            return web.json_response(replay, headers={"Idempotency-Replayed": "true"})
        if model not in GENERATED:
            return error(400, message=f"The Emulator does not generate {model}", param="model")
        try:
            if model == MODEL:
                validate_body(body)
            else:
                validate_family(body, self._hosted)
        except BodyError as exc:
            return error(400, message=exc.message, param=exc.param)
        callback = body.get("callback_url")
        if callback is not None:
            refused = self._callback_refused(callback)
            if refused:
                return error(400, message=refused, param="callback_url")
        limit = account.max_concurrent_tasks
        if limit is not None and account.unfinished >= limit:
            return error(429, message=f"Concurrency limit of {limit} unfinished tasks reached",
                         retry_after=self.emu.clock.to_real(self._next_end(account)))
        price = self.world.price(body)
        if price > account.balance:
            return error(402, message=f"Insufficient quota: this task needs {price} credits, "
                         f"{round(account.balance, 4)} remain.")
        task = self.world.create(account, body, digest, key)
        payload = self.world.created_snapshot(task)
        if fault is not None:
            return await self._misbehave(request, fault, payload)
        return web.json_response(payload)

    def _callback_refused(self, url: object) -> str | None:
        if not isinstance(url, str):
            return "callback_url must be a string"
        if self.emu.allow_local_callbacks:
            return None if url.startswith(("https://", "http://")) else "callback_url must be a URL"
        if not url.startswith("https://"):
            return "callback_url must use HTTPS"
        if is_local_or_private(url):
            return "callback_url must not point at an internal address"
        return None

    def _next_end(self, account: Account) -> float:
        now = self.emu.clock.now()
        ends = [t.ends_at - now for t in self.world.tasks.values()
                if t.key == account.key and not t.settled]
        return max(min(ends, default=1.0), 0.5)

    def _visible(self, account: Account, task_id: str) -> EmuTask | web.Response:
        if not task_id.startswith("task-unified-"):
            return error(400, code="invalid_task_id", param="task_id",
                         message="Invalid task ID format, must start with 'task-unified-'")
        task = self.world.tasks.get(task_id)
        if task is None:
            return error(404, code="task_not_found")
        if task.key != account.key:
            return error(403, code="permission_denied",
                         message="You don't have permission to access this task")
        return task

    async def get_task(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/tasks/{task_id}``."""
        account = self._account(request, limit_type="evo_api_error")
        if isinstance(account, web.Response):
            return account
        task = self._visible(account, request.match_info["task_id"])
        if isinstance(task, web.Response):
            return task
        self.world.note_read(task.id, time.monotonic())
        fault = self.emu.faults.draw("get")
        if fault is not None:
            return await self._misbehave(request, fault, self._json(task))
        corrupt = self.emu.corrupted.get(task.id)
        if corrupt is not None:
            return web.Response(status=200, body=corrupt, content_type="application/json")
        return web.json_response(self._json(task))

    async def batch(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/tasks/batch`` with ``{"task_ids": [...]}`` (at most 50)."""
        if not self.emu.batch_endpoint:
            return error(404, code="not_found", message="Route not found")
        account = self._account(request)
        if isinstance(account, web.Response):
            return account
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return error(400, message="Request body is not valid JSON", param="body")
        ids = body.get("task_ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            return error(400, message="task_ids must be a list of strings", param="task_ids")
        if len(ids) > 50:
            return error(400, message="At most 50 task_ids per request", param="task_ids")
        found = [self.world.tasks.get(i) for i in ids]
        now = time.monotonic()
        for task in found:
            if task is not None and task.key == account.key:
                self.world.note_read(task.id, now)
        data = [self._json(t) for t in found if t is not None and t.key == account.key
                and t.id not in self.emu.corrupted]
        fault = self.emu.faults.draw("batch")
        if fault is not None:
            return await self._misbehave(request, fault, {"data": data})
        return web.json_response({"data": data})

    async def list_tasks(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/tasks?status=&page=&page_size=`` (newest first, no result links)."""
        if not self.emu.list_endpoint:
            return error(404, code="not_found", message="Route not found")
        account = self._account(request)
        if isinstance(account, web.Response):
            return account
        try:
            page = max(int(request.query.get("page", "1")), 1)
            size = min(max(int(request.query.get("page_size", "20")), 1), 100)
        except ValueError:
            return error(400, message="page and page_size must be integers", param="page")
        wanted = request.query.get("status")
        rows = []
        for task in reversed(self.world.tasks.values()):  # newest first
            if task.key != account.key:
                continue
            data = self._json(task)
            if wanted and data["status"] != wanted:
                continue
            rows.append({
                "id": task.id, "model": task.model, "type": "video",
                "status": data["status"], "progress": data["progress"],
                "created_at": task.created_unix, "duration": task.video_duration,
                "has_results": "results" in data, "result_count": len(data.get("results", [])),
                "has_error": "error" in data, "credits_used": data["usage"].get("credits_used"),
            })
        start = (page - 1) * size
        return web.json_response({"data": rows[start:start + size], "total": len(rows),
                                  "page": page, "page_size": size})

    async def credits(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/credits``."""
        account = self._account(request)
        if isinstance(account, web.Response):
            return account
        fault = self.emu.faults.draw("credits")
        balance = {"remaining_credits": round(account.balance, 4),
                   "unlimited_credits": False, "used_credits": round(account.used, 4)}
        payload = {"success": True, "message": "", "data": {
            "token": balance, "user": {k: v for k, v in balance.items()
                                       if k != "unlimited_credits"}}}
        if fault is not None:
            return await self._misbehave(request, fault, payload)
        return web.json_response(payload)

    async def upload(self, request: web.Request) -> web.StreamResponse:
        """``POST /api/v1/files/upload/base64``: file hosting (jpeg, png, gif, webp; at
        most 100 MB); the file is served back at ``/uploads/<id>.<ext>``."""
        account = self._account(request)
        if isinstance(account, web.Response):
            return account
        fault = self.emu.faults.draw("upload")
        if fault is not None:
            return await self._misbehave(request, fault, None)
        try:
            body = await request.json()
            data_url = body["base64_data"]
            encoded = data_url.split(",", 1)[1] if data_url.startswith("data:") else data_url
            data = base64.b64decode(encoded, validate=True)
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
            return error(400, message="base64_data must be base64 image data",
                         param="base64_data")
        kind = _image_kind(data)
        if kind is None:
            return error(400, message="only image/jpeg, image/png, image/gif and image/webp "
                         "files can be uploaded", param="base64_data")
        if len(data) > MAX_UPLOAD:
            return error(413, message="files are at most 100 MB", param="base64_data")
        self.world.upload_requests.append(
            {"headers": sorted(k.lower() for k in request.headers), "keys": sorted(body)})
        file_id = f"file_{len(self.world.uploads) + 1:06d}"
        name = f"{file_id}.{kind}"
        self.world.uploads[name] = data
        url = f"{self.emu.url}/uploads/{name}"
        return web.json_response({"success": True, "code": 200, "msg": "File uploaded", "data": {
            "file_id": file_id, "file_name": name, "original_name": name,
            "file_size": len(data), "mime_type": f"image/{kind}", "upload_path": "images",
            "file_url": url, "download_url": url,
            "expires_at": "in 72 hours"}})

    async def uploaded(self, request: web.Request) -> web.StreamResponse:
        """``GET /uploads/<name>``: an uploaded file."""
        data = self.world.uploads.get(request.match_info["name"])
        if data is None:
            return web.Response(status=404, text="Not Found")
        kind = request.match_info["name"].rsplit(".", 1)[-1]
        return web.Response(body=data, content_type=f"image/{kind}")

    def _hosted(self, url: str) -> bool:
        """An input URL the service could fetch: uploads must exist; others are trusted."""
        prefix = f"{self.emu.url}/uploads/"
        return not url.startswith(prefix) or url.removeprefix(prefix) in self.world.uploads

    async def file(self, request: web.Request) -> web.StreamResponse:
        """``GET /files/{task_id}.mp4``: the result clip, until it expires."""
        if "Authorization" in request.headers:
            self.world.file_requests_with_key += 1
        task_id = request.match_info["name"].removesuffix(".mp4")
        task = self.world.tasks.get(task_id)
        if task is None or not task.settled or task.timeline.failure_code is not None:
            return web.Response(status=404, text="Not Found")
        assert task.ended_at is not None
        if self.emu.clock.now() > task.ended_at + self.emu.result_ttl:
            return web.Response(status=403, content_type="application/xml",
                                text="<Error><Code>AccessDenied</Code>"
                                     "<Message>Request has expired</Message></Error>")
        if request.rel_url.raw_query_string != presigned_query(task.id):
            self.world.bad_signatures += 1
            return web.Response(status=403, content_type="application/xml",
                                text="<Error><Code>SignatureDoesNotMatch</Code></Error>")
        data = self.emu.result_file(task.id)
        fault = self.emu.faults.draw("file")
        if fault is not None and fault.kind != "reset":
            return await self._misbehave(request, fault, None)
        response = await send_file(request, data, f'"{task.id}-{len(data)}"',
                                   reset_after=len(data) // 2 if fault is not None else None)
        self.world.file_bytes_sent += response.body_length
        return response


    async def timeline(self, request: web.Request) -> web.StreamResponse:
        """``GET /_emulator/timeline``: the clock and every task's end, for benchmarks.

        ``monotonic_start`` is the system monotonic time at which API time was 0, so another
        process can turn its own ``time.monotonic()`` readings into API time.
        """
        clock = self.emu.clock
        return web.json_response({
            "monotonic_start": clock.monotonic_start, "time_scale": clock.time_scale,
            "now": clock.now(), "connections": len(self.world.peers),
            "requests": {route: sum(n for (r, _), n in self.world.requests.items()
                                    if r == route)
                         for route in {r for r, _ in self.world.requests}},
            "ends": {t.id: t.ends_at for t in self.world.tasks.values()},
            "failed": [t.id for t in self.world.tasks.values()
                       if t.timeline.failure_code is not None],
            "created": {t.id: t.created_at for t in self.world.tasks.values()}})


    async def statistics(self, request: web.Request) -> web.StreamResponse:
        """``GET /_emulator/statistics``: the counters of ``Emulator.statistics()`` as JSON,
        for tests whose Emulator runs in another process (``requests`` keyed
        ``"route status"``)."""
        stats = self.world.statistics()
        return web.json_response({
            "requests": {f"{route} {status}": n for (route, status), n in stats.requests.items()},
            "tasks_created": stats.tasks_created, "peak_in_flight": stats.peak_in_flight,
            "in_flight": stats.in_flight,
            "tasks_per_idempotency_key": stats.tasks_per_idempotency_key,
            "duplicate_bodies": stats.duplicate_bodies, "replays": stats.replays})


def _image_kind(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def _route_name(request: web.Request) -> str:
    path, method = request.path, request.method
    if path == "/v1/videos/generations":
        return "create"
    if path == "/v1/tasks/batch" and method == "POST":
        return "batch"
    if path == "/v1/tasks":
        return "list"
    if path.startswith("/v1/tasks/"):
        return "get"
    if path == "/v1/credits":
        return "credits"
    if path.startswith("/files/"):
        return "file"
    if path.startswith(("/api/v1/files/", "/uploads/")):
        return "upload"
    if path.startswith("/_emulator/"):
        return "emulator"
    return "other"
