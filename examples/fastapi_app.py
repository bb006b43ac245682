"""kling_async in a FastAPI app: one Client per process, webhooks, live progress.

Run it (with the ``web`` extra installed):

    uvicorn examples.fastapi_app:app --port 8000

and open http://127.0.0.1:8000/. Without ``EVOLINK_API_KEY`` the app starts the built-in
Emulator in-process; with a key it generates real clips. Set ``PUBLIC_URL`` to the address
EvoLink can reach (https) to receive callbacks at ``/webhooks/evolink``.

- The ``Client`` is owned by the app's lifespan: one pool and one poller for every request.
- ``POST /videos`` submits and answers with the task id at once.
- ``GET /videos/{id}`` reads status, progress and the result link.
- ``GET /videos/{id}/events`` streams progress as Server-Sent Events from ``watch``.
- ``POST /webhooks/evolink`` feeds callbacks to ``ingest_callback`` and answers at once.

Scale out with several workers: every worker is a process with its own Client, so they
share the account's limits through Redis. Set ``KLING_ASYNC_REDIS_URL`` (and
``KLING_ASYNC_MAX_IN_FLIGHT`` if you know the account's limit) and point every worker at
the same API (a real key, or one Emulator started with ``python -m kling_async.testing``):

    KLING_ASYNC_REDIS_URL=redis://localhost:6379/0 uvicorn examples.fastapi_app:app --workers 3
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, StreamingResponse
from pydantic import BaseModel, Field

import kling_async as kling

EMULATOR_SCALE = 100.0


class VideoRequest(BaseModel):
    """What the page (or any API caller) sends to ``POST /videos``."""

    prompt: str = Field(min_length=1)
    duration: int = 5
    quality: str = "720p"


def describe(update_or_snapshot: kling.TaskUpdate | kling.TaskSnapshot) -> dict[str, Any]:
    """The JSON the app shows for a task."""
    if isinstance(update_or_snapshot, kling.TaskUpdate):
        snapshot, error = update_or_snapshot.snapshot, update_or_snapshot.error
        task_id = update_or_snapshot.task_id
    else:
        snapshot, error, task_id = update_or_snapshot, None, update_or_snapshot.id
    failure = snapshot.error if snapshot is not None else None
    return {
        "id": task_id,
        "status": snapshot.status.value if snapshot is not None else "unknown",
        "progress": snapshot.progress if snapshot is not None else 0,
        "video_url": snapshot.video_url if snapshot is not None else None,
        "error": str(error) if error else (f"{failure.code}: {failure.message}"
                                           if failure else None),
    }


def create_app(*, api_key: str | None = None, base_url: str | None = None,
               public_url: str | None = None, poll: kling.PollPolicy | None = None,
               allow_local_callback: bool | None = None) -> FastAPI:
    """Build the app. Arguments default to the environment (see the module docstring)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            key = api_key or os.environ.get("EVOLINK_API_KEY")
            url, policy, local = base_url, poll, allow_local_callback
            if not key:
                from kling_async.testing import Emulator

                emulator = await stack.enter_async_context(
                    Emulator(time_scale=EMULATOR_SCALE, allow_local_callbacks=True))
                key, url = emulator.api_key, emulator.url
                policy = policy or kling.PollPolicy(min_interval=0.05, max_interval=0.6,
                                                    time_scale=EMULATOR_SCALE)
                local = True if local is None else local
            redis_url = os.environ.get("KLING_ASYNC_REDIS_URL")
            limit = os.environ.get("KLING_ASYNC_MAX_IN_FLIGHT")
            app.state.client = await stack.enter_async_context(kling.Client(
                key, base_url=url, poll=policy,
                max_in_flight=int(limit) if limit else None,
                budget=kling.RedisBudget(redis_url) if redis_url else None))
            app.state.allow_local_callback = bool(local)
            yield

    app = FastAPI(title="kling_async demo", lifespan=lifespan)
    app.state.public_url = public_url or os.environ.get("PUBLIC_URL")

    def client_of(request: Request) -> kling.Client:
        client: kling.Client = request.app.state.client
        return client

    @app.post("/videos", status_code=202)
    async def submit(body: VideoRequest, request: Request) -> dict[str, Any]:
        public = request.app.state.public_url or str(request.base_url).rstrip("/")
        local = request.app.state.allow_local_callback
        try:
            video = kling.TextToVideo(
                prompt=body.prompt, duration=body.duration, quality=body.quality,  # type: ignore[arg-type]
                callback_url=f"{public}/webhooks/evolink" if (
                    local or public.startswith("https://")) else None,
                allow_local_callback=local)
        except (ValueError, TypeError) as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from exc
        try:
            snapshot = await client_of(request).submit(video)
        except kling.KlingError as exc:
            raise HTTPException(status_code=502, detail=str(exc)) from exc
        return describe(snapshot)

    @app.get("/videos/{task_id}")
    async def status(task_id: str, request: Request) -> dict[str, Any]:
        try:
            return describe(await client_of(request).get(task_id))
        except ValueError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from exc
        except kling.NotFoundError as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from exc
        except kling.KlingError as exc:
            raise HTTPException(status_code=502, detail=str(exc)) from exc

    @app.get("/videos/{task_id}/events")
    async def events(task_id: str, request: Request) -> StreamingResponse:
        client = client_of(request)
        if not task_id.startswith("task-unified-"):  # checked before the stream starts
            raise HTTPException(status_code=422, detail=f"{task_id!r} is not a task id")

        async def sse() -> AsyncIterator[str]:
            async with client.watch([task_id]) as updates:
                async for update in updates:
                    yield f"data: {json.dumps(describe(update))}\n\n"

        return StreamingResponse(sse(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"})

    @app.post("/webhooks/evolink", status_code=204)
    async def webhook(request: Request) -> Response:
        # Answer at once (the service gives a receiver 10 s); the poller confirms the claim.
        client_of(request).ingest_callback(await request.body())
        return Response(status_code=204)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return PAGE

    return app


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>kling_async demo</title>
<style>
 body { font-family: system-ui, sans-serif; max-width: 40rem; margin: 3rem auto; }
 input { width: 70%; padding: .4rem; } button { padding: .4rem 1rem; }
 progress { width: 100%; height: 1.5rem; margin-top: 1rem; }
 #status { color: #555; margin-top: .5rem; } #result a { font-size: 1.2rem; }
</style></head>
<body>
<h1>Text to video</h1>
<form id="form"><input id="prompt" value="A cat running on a grass field under bright sunshine">
<button id="go" type="submit">Generate</button></form>
<progress id="bar" max="100" value="0"></progress>
<div id="status">Type a prompt and press Generate.</div>
<div id="result"></div>
<script>
document.getElementById("form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const status = document.getElementById("status"), bar = document.getElementById("bar");
  document.getElementById("result").textContent = "";
  bar.value = 0;
  const response = await fetch("/videos", {method: "POST",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify({prompt: document.getElementById("prompt").value})});
  const task = await response.json();
  if (!response.ok) { status.textContent = "Refused: " + task.detail; return; }
  status.textContent = "Submitted " + task.id;
  const events = new EventSource("/videos/" + task.id + "/events");
  events.onmessage = (message) => {
    const update = JSON.parse(message.data);
    bar.value = update.progress;
    status.textContent = update.status + " " + update.progress + "%";
    if (update.status === "completed" || update.status === "failed" || update.error) {
      events.close();
      const result = document.getElementById("result");
      if (update.video_url) {
        const link = document.createElement("a");
        link.href = update.video_url; link.id = "video"; link.textContent = "Your clip is ready";
        result.appendChild(link);
      } else { result.textContent = "Failed: " + update.error; }
    }
  };
});
</script>
</body></html>
"""

app = create_app()
