"""A clear "busy" instead of a wait without end: a model run waits for its slot at most
`DINO_DEMO_BUSY_WAIT` seconds (default 60), then the visitor is told to try again; the queue holds
at most `DINO_DEMO_QUEUE_SIZE` waiting events (default 16), beyond which joins are refused at once
("Queue is full! Please try again.") rather than left to time out; `admission` refuses them, and
uploads beyond as many at once, before Gradio parses them."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from .. import env

WAIT_VARIABLE = "DINO_DEMO_BUSY_WAIT"
QUEUE_VARIABLE = "DINO_DEMO_QUEUE_SIZE"
BUSY_MESSAGE = "The server is busy with other visitors' runs: try again in a minute."


def queue_size() -> int:
    """Events the page's queue holds waiting (`DINO_DEMO_QUEUE_SIZE`, default 16)."""
    return env.positive_number(QUEUE_VARIABLE, 16, integer=True)


@contextmanager
def model_turn(slot: threading.Semaphore, wait_s: float | None = None) -> Iterator[None]:
    """Hold `slot` for a model run, waiting at most `wait_s` seconds (`DINO_DEMO_BUSY_WAIT`, 60);
    ValueError(BUSY_MESSAGE) when it stays taken."""
    wait_s = env.positive_number(WAIT_VARIABLE, 60.0) if wait_s is None else wait_s
    if not slot.acquire(timeout=wait_s):
        raise ValueError(BUSY_MESSAGE)
    try:
        yield
    finally:
        slot.release()
