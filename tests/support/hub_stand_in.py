"""What the tests' stand-ins for the Hugging Face Hub answer: a file with the commit and ETag
headers huggingface_hub reads, or a 404 for a file the repository does not hold."""
from __future__ import annotations

import hashlib
import http.server

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def answer_as_hub(handler: http.server.BaseHTTPRequestHandler, data: bytes | None, body: bool,
                  *, missing_header: bool = False) -> None:
    """Answer `handler`'s request with `data` (its bytes only when `body`: GET, not HEAD), or 404 when
    `data` is None (with the Hub's `X-Error-Code: EntryNotFound` when `missing_header`)."""
    if data is None:
        handler.send_response(404)
        if missing_header:
            handler.send_header("X-Error-Code", "EntryNotFound")
        handler.send_header("Content-Length", "0")
        handler.end_headers()
        return
    handler.send_response(200)
    handler.send_header("X-Repo-Commit", COMMIT)
    handler.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    if body:
        handler.wfile.write(data)
