"""Overload answered at the door, in the server's one event-loop thread, before Gradio parses
anything: gradio_client gives each upload and queue join 5 s, and with 80 visitors at once the loop
was busy most of the time (Gradio builds a new session's copy of the page's configuration, every
component of it, on the loop for each accepted join), so refusals came too late to be read.

`BusyGate` is an ASGI middleware that
- refuses an upload with 503 and `busy.BUSY_MESSAGE` while `uploads` others are being received
  (default: the queue's size, `DINO_DEMO_QUEUE_SIZE`); its body is read and dropped (up to
  `REFUSED_BODY_READ`), so that the client reads the answer rather than a reset connection;
- refuses a queue join (`/queue/join`, `/call/<api>`) with 503 while the queue is full, counting
  the joins on their way in, as Gradio itself would after parsing it (gradio_client: "Queue is
  full! Please try again.");
- builds an admitted join's session state in a worker thread, so that the loop keeps answering.
"""
from __future__ import annotations

import json

import anyio

from . import busy

JOIN_SUFFIX = "/queue/join"
CALL_PART = "/call/"
UPLOAD_SUFFIX = "/upload"
RETRY_AFTER_S = 30
REFUSED_BODY_READ = 4 * 2**20  # bytes of a refused request read before answering; a larger one is cut short
JOIN_BODY_LIMIT = 2**20  # bytes of a queue join's JSON body read at most (larger: refused with 413)


class BusyGate:
    """ASGI middleware: see the module docstring. `app`: the wrapped ASGI app (Gradio's, which is
    `scope["app"]` with its queue and session states); `uploads`: uploads received at once."""

    def __init__(self, app, uploads: int | None = None) -> None:
        self.app = app
        self.uploads = busy.queue_size() if uploads is None else uploads
        self.receiving = 0
        self.joining = 0

    async def __call__(self, scope, receive, send) -> None:
        if scope.get("type") != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if path.endswith(UPLOAD_SUFFIX):
            await self._upload(scope, receive, send)
        elif path.endswith(JOIN_SUFFIX) or CALL_PART in path:
            await self._join(scope, receive, send, path.endswith(JOIN_SUFFIX))
        else:
            await self.app(scope, receive, send)

    async def _upload(self, scope, receive, send) -> None:
        if self.receiving >= self.uploads:
            await _drain(receive, REFUSED_BODY_READ)
            await refuse(send)
            return
        self.receiving += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.receiving -= 1

    async def _join(self, scope, receive, send, joining: bool) -> None:
        if queue_full(scope.get("app"), self.joining):
            await _drain(receive, REFUSED_BODY_READ)
            await refuse(send)
            return
        self.joining += 1
        try:
            if joining:
                body = await _drain(receive, JOIN_BODY_LIMIT)
                if len(body) > JOIN_BODY_LIMIT:  # a join is a few hundred bytes of JSON
                    await refuse(send, 413, "The request is too large.")
                    return
                session = _session_hash(body)
                if session:
                    await anyio.to_thread.run_sync(_session_state, scope.get("app"), session)
                receive = _replay(body, receive)
            await self.app(scope, receive, send)
        finally:
            self.joining -= 1


def queue_full(app, joining: int = 0) -> bool:
    """Whether Gradio's queue for `app` (a gradio App) holds as many waiting events as it may,
    counting `joining` events on their way in."""
    blocks = app.get_blocks() if hasattr(app, "get_blocks") else None
    queue = getattr(blocks, "_queue", None)
    return queue is not None and queue.max_size is not None and len(queue) + joining >= queue.max_size


async def refuse(send, status: int = 503, message: str = busy.BUSY_MESSAGE) -> None:
    """Answer `status` (503: busy) with Gradio's error form: {"detail": message}."""
    body = json.dumps({"detail": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"retry-after", str(RETRY_AFTER_S).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _drain(receive, limit: int | None = None) -> bytes:
    """The request's body, read whole, or until more than `limit` bytes came (then those)."""
    chunks, size = [], 0
    while limit is None or size <= limit:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive):
    """A `receive` that gives `body` once, then what the client sends next (its disconnect)."""
    given = False

    async def replayed() -> dict:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


def _session_hash(body: bytes) -> str | None:
    try:
        value = json.loads(body).get("session_hash")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and value else None


def _session_state(app, session: str) -> None:
    """Gradio's state of `session`, made now when missing (in a worker thread: it copies the
    configuration of every component on the page)."""
    holder = getattr(app, "state_holder", None)
    if holder is not None and session not in holder:
        holder[session]
