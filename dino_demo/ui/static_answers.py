"""The page's static answers, computed once: Gradio builds the page config (about 300 KB of JSON:
the layout, every component and event) again for each visitor who opens the page or connects a
client, copying and serialising it on the server's few threads; twenty visitors at once waited
seconds for it. `StaticAnswers` is an ASGI middleware that keeps the answer to GET `/`, `/config`
and `/gradio_api/info` per request form (path, query, host and forwarding headers) and serves it
again; one request computes a missing answer while the others with the same form wait for it.
At most `capacity` answers are kept (the least recently used go first), only successful ones that
set no cookie, and only where the app has no login (the answers then differ by nobody's name).
"""
from __future__ import annotations

import asyncio
from collections import OrderedDict

CACHED_PATHS = frozenset({"/", "/config", "/config/", "/gradio_api/info", "/gradio_api/info/"})
KEY_HEADERS = (b"host", b"x-forwarded-host", b"x-forwarded-proto", b"x-forwarded-prefix", b"x-forwarded-port",
               b"accept-encoding")


class StaticAnswers:
    """ASGI middleware: see the module docstring. `app`: the wrapped ASGI app."""

    def __init__(self, app, capacity: int = 32) -> None:
        self.app = app
        self.capacity = capacity
        self._answers: OrderedDict[tuple, list[dict]] = OrderedDict()
        self._locks: dict[tuple, asyncio.Lock] = {}

    async def __call__(self, scope, receive, send) -> None:
        if scope.get("type") != "http" or scope.get("method") != "GET" or scope.get("path") not in CACHED_PATHS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        key = (scope["path"], scope.get("query_string", b""), scope.get("root_path", ""),
               *(headers.get(name, b"") for name in KEY_HEADERS))
        answer = self._get(key)
        if answer is None:
            lock = self._locks.setdefault(key, asyncio.Lock())
            async with lock:
                answer = self._get(key)
                if answer is None:
                    answer = await self._compute(scope, receive, key)
            if len(self._locks) > 4 * self.capacity:
                self._locks.clear()
        for message in answer:
            await send(message)

    def _get(self, key: tuple) -> list[dict] | None:
        answer = self._answers.get(key)
        if answer is not None:
            self._answers.move_to_end(key)
        return answer

    async def _compute(self, scope, receive, key: tuple) -> list[dict]:
        messages: list[dict] = []

        async def keep(message: dict) -> None:
            messages.append(message)

        await self.app(scope, receive, keep)
        start = next((m for m in messages if m.get("type") == "http.response.start"), None)
        cookie = start is not None and any(name.lower() == b"set-cookie" for name, _ in start.get("headers", []))
        if start is not None and start.get("status") == 200 and not cookie:
            self._answers[key] = messages
            while len(self._answers) > self.capacity:
                self._answers.popitem(last=False)
        return messages
