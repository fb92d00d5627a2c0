"""The RAG HTTP service: retrieval over any :class:`~rag.types.Retriever`, as JSON.

Endpoints::

    POST /v1/retrieve   {"query": str, "k": int = 5} -> {"passages": [Passage...], "took_ms": float}
    GET  /healthz       liveness: the process answers
    GET  /readyz        readiness: the index is loaded and non-empty (503 otherwise)

Errors are JSON ``{"error": {"code": ..., "message": ...}}``: 401 without the bearer token (when one is
configured), 422 for an invalid body (query empty or longer than 2000 characters after stripping, k
outside 1..50). Retrieval is synchronous (SQLite), so it runs in a worker thread, off the event loop.

Run it with ``python -m rag.server --host 127.0.0.1 --port 8100 [--knowledge DIR] [--index PATH]``
(``RAG_API_TOKEN`` from the environment protects it).
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, field_validator

from .settings import MAX_QUERY_CHARS, MAX_TOP_K
from .types import Retriever

__all__ = ["MAX_QUERY_CHARS", "RetrieveRequest", "create_app", "main"]

logger = logging.getLogger(__name__)


class RetrieveRequest(BaseModel):
    """Body of ``POST /v1/retrieve``."""

    query: str
    k: int = Field(default=5, ge=1, le=MAX_TOP_K)

    @field_validator("query")
    @classmethod
    def _strip_and_bound(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must not be empty or only whitespace")
        if len(value) > MAX_QUERY_CHARS:
            raise ValueError(f"must be at most {MAX_QUERY_CHARS} characters, got {len(value)}")
        return value


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def _default_ready(retriever: Retriever) -> Callable[[], bool]:
    # The Retriever protocol has no size; an index that knows its size (``len()``) reports it.
    def ready() -> bool:
        try:
            return len(retriever) > 0  # type: ignore[arg-type]  # optional capability, checked at run time
        except TypeError:
            return True

    return ready


def create_app(
    retriever: Retriever,
    *,
    token: str | None = None,
    ready: Callable[[], bool] | None = None,
) -> FastAPI:
    """Build the service's FastAPI app.

    Args:
        retriever: what answers the queries (its ``search`` is called in a worker thread).
        token: when set, every request except the probes needs ``Authorization: Bearer <token>``.
        ready: readiness check for ``/readyz`` (default: ``len(retriever) > 0`` when it has a length).
    """
    is_ready = ready if ready is not None else _default_ready(retriever)
    expected = f"Bearer {token}".encode() if token else None
    app = FastAPI(title="RAG retrieval service", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            where = ".".join(str(part) for part in err.get("loc", ()) if part != "body") or "body"
            problems.append(f"{where}: {err.get('msg', 'invalid')}".replace("Value error, ", ""))
        return _error(422, "invalid_request", "; ".join(problems))

    @app.middleware("http")
    async def _auth(request: Request, call_next: Callable[[Request], Any]) -> Any:
        if expected is not None and request.url.path not in ("/healthz", "/readyz"):
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return _error(
                    401, "unauthorized", "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
                )
        return await call_next(request)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        ok = await asyncio.to_thread(is_ready)
        if ok:
            return JSONResponse({"status": "ready"})
        return _error(503, "not_ready", "the index is not loaded or is empty")

    @app.post("/v1/retrieve")
    async def retrieve(body: RetrieveRequest) -> dict[str, Any]:
        started = time.perf_counter()
        passages = await asyncio.to_thread(retriever.search, body.query, body.k)
        took_ms = round((time.perf_counter() - started) * 1000.0, 3)
        return {"passages": [p.to_dict() for p in passages], "took_ms": took_ms}

    return app


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: build the local index and serve it."""
    import uvicorn

    from .pipeline import build_local_retriever
    from .settings import load_settings

    parser = argparse.ArgumentParser(prog="python -m rag.server", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--knowledge", help="folder to ingest (default: KNOWLEDGE_DIR or knowledge/)")
    parser.add_argument("--index", help="SQLite index file (default: INDEX_PATH or data/index.sqlite3)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = load_settings()
    retriever = build_local_retriever(settings, knowledge_dir=args.knowledge, index_path=args.index)
    app = create_app(retriever, token=settings.rag_api_token)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
