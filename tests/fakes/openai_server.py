"""A local OpenAI-compatible chat server that the real ``openai`` SDK talks to, with injectable faults.

``POST /v1/chat/completions`` answers with ``reply`` (a list of content pieces, one SSE chunk each,
then ``data: [DONE]``) or as one JSON completion when ``stream`` is false. Faults come from a per-request
queue (:meth:`FakeOpenAI.fail_next`), else from :attr:`FakeOpenAI.fault` (every request):

- ``Fault(status=500)`` / ``Fault(status=429)``: an OpenAI-style JSON error with that status;
- ``Fault(hang=True)``: never answers (until the server stops);
- ``Fault(cut_after=2)``: streams 2 content chunks, then drops the connection mid-body;
- ``Fault(delay_s=0.2)``: waits before every chunk (slow tokens).

``POST /v1/embeddings`` answers with :func:`hashed_bag_of_words` vectors of :attr:`FakeOpenAI.embedding_dim`
(deterministic: texts sharing words are close), through the same fault queue (status, hang, delay).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from . import ServerThread

__all__ = ["FakeOpenAI", "Fault", "hashed_bag_of_words"]


def hashed_bag_of_words(text: str, dim: int) -> list[float]:
    """Word counts of ``text`` (lower-cased) hashed into ``dim`` buckets: a deterministic toy embedding."""
    vector = [0.0] * dim
    for word in re.findall(r"[^\W_]+", text.lower()):
        vector[int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "big") % dim] += 1.0
    return vector


@dataclass(frozen=True)
class Fault:
    """What goes wrong with one request (see the module docstring)."""

    status: int | None = None
    hang: bool = False
    cut_after: int | None = None
    delay_s: float = 0.0


class _ConnectionDropped(Exception):
    """Raised inside the response body: uvicorn then closes the socket without ending the body."""


class FakeOpenAI:
    """The fake server: start with ``with FakeOpenAI() as llm:``, point the SDK at ``llm.base_url``."""

    def __init__(self) -> None:
        self.reply: list[str] | Callable[[dict[str, Any]], list[str]] = ["Hello", " world."]
        self.fault: Fault | None = None
        self.embedding_dim = 64
        self.requests: list[dict[str, Any]] = []
        self._queue: deque[Fault] = deque()
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._thread = ServerThread(self._app())
        self.base_url = f"{self._thread.base_url}/v1"

    def fail_next(self, *faults: Fault) -> None:
        """Apply ``faults`` to the next requests, one each, in order."""
        with self._lock:
            self._queue.extend(faults)

    def reset(self) -> None:
        """Forget requests and faults; reply with the default text again."""
        with self._lock:
            self._queue.clear()
            self.requests.clear()
        self.fault = None
        self.reply = ["Hello", " world."]
        self.embedding_dim = 64

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._released.set()  # releases hanging requests so uvicorn can shut down
        self._thread.stop()

    def _next_fault(self, body: dict[str, Any]) -> Fault | None:
        with self._lock:
            self.requests.append(body)
            return self._queue.popleft() if self._queue else self.fault

    async def _hang(self) -> None:
        # Set from the test's thread on exit, so a threading.Event waited on in a worker thread.
        await asyncio.to_thread(self._released.wait)

    async def _fail(self, fault: Fault | None) -> Response | None:
        """The response of a hang or status fault (after the hang is released); None to answer normally."""
        if fault is not None and fault.hang:
            await self._hang()
            return Response(status_code=503)
        if fault is not None and fault.status is not None:
            error = {"message": f"injected fault {fault.status}", "type": "server_error", "code": None}
            return JSONResponse({"error": error}, status_code=fault.status)
        return None

    def _app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def completions(request: Request) -> Response:
            body = await request.json()
            fault = self._next_fault(body)
            failed = await self._fail(fault)
            if failed is not None:
                return failed
            pieces = self.reply(body) if callable(self.reply) else list(self.reply)
            model = str(body.get("model", "fake"))
            if not body.get("stream"):
                message = {"role": "assistant", "content": "".join(pieces)}
                return JSONResponse(
                    {
                        "id": "chatcmpl-fake",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": model,
                        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                        "usage": {
                            "prompt_tokens": 1,
                            "completion_tokens": len(pieces),
                            "total_tokens": 1 + len(pieces),
                        },
                    }
                )
            return StreamingResponse(self._sse(pieces, model, fault), media_type="text/event-stream")

        @app.post("/v1/embeddings")
        async def embeddings(request: Request) -> Response:
            body = await request.json()
            fault = self._next_fault(body)
            failed = await self._fail(fault)
            if failed is not None:
                return failed
            if fault is not None and fault.delay_s:
                await asyncio.sleep(fault.delay_s)
            texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
            data = [
                {"object": "embedding", "index": i, "embedding": hashed_bag_of_words(text, self.embedding_dim)}
                for i, text in enumerate(texts)
            ]
            usage = {"prompt_tokens": len(texts), "total_tokens": len(texts)}
            return JSONResponse({"object": "list", "model": body.get("model", "fake"), "data": data, "usage": usage})

        return app

    async def _sse(self, pieces: list[str], model: str, fault: Fault | None) -> AsyncIterator[bytes]:
        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            data = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return f"data: {json.dumps(data)}\n\n".encode()

        yield chunk({"role": "assistant", "content": ""})
        for sent, piece in enumerate(pieces):
            if fault is not None and fault.cut_after is not None and sent >= fault.cut_after:
                raise _ConnectionDropped(f"connection dropped after {sent} chunks")
            if fault is not None and fault.delay_s:
                await asyncio.sleep(fault.delay_s)
            yield chunk({"content": piece})
        yield chunk({}, "stop")
        yield b"data: [DONE]\n\n"
