"""The RAG service on a real port with the real httpx client: retrieval, auth, validation, outages."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rag.client import RagClient, RagRequestError, RagServiceError
from rag.generate import Generator
from rag.pipeline import AnswerDone, Assistant, build_local_retriever
from rag.server import create_app
from rag.settings import Settings
from rag.types import Retriever
from resilience import CircuitOpenError, init_registry_sync, rag_api_breaker
from resilience.testing import FakeClock
from tests.fakes import ListRetriever, ServerThread, closed_port, passage, silent_server

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "s3cret-token"
DOCS = {
    "redis.md": "# Redis\n\nShared breaker state lives in Redis. Every instance reads the same keys.\n",
    "timeouts.md": "# Timeouts\n\nThe RAG client gives up after RAG_TIMEOUT_S seconds and the breaker counts it.\n",
}


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Retriever]:
    """The real FTS5 index built from a small knowledge folder."""
    root = tmp_path_factory.mktemp("kb")
    (root / "knowledge").mkdir()
    for name, text in DOCS.items():
        (root / "knowledge" / name).write_text(text)
    built = build_local_retriever(Settings(knowledge_dir=root / "knowledge", index_path=root / "data" / "index.db"))
    yield built
    built.close()  # type: ignore[attr-defined]  # the FtsIndex behind the protocol


@pytest.fixture(scope="module")
def server(index: Retriever) -> Iterator[ServerThread]:
    """The service over the real index, without a token."""
    with ServerThread(create_app(index)) as running:
        yield running


@pytest.fixture(scope="module")
def secured(index: Retriever) -> Iterator[ServerThread]:
    """The service over the real index, requiring a bearer token."""
    with ServerThread(create_app(index, token=TOKEN)) as running:
        yield running


async def test_retrieve_returns_passages(server: ServerThread) -> None:
    """A query returns the matching passages, best first, as Passage objects."""
    client = RagClient(server.base_url, timeout_s=2.0)
    try:
        passages = await client.search("where does shared breaker state live", 3)
    finally:
        await client.aclose()
    assert passages and passages[0].doc_id == "redis.md"
    assert "Redis" in passages[0].text and len(passages) <= 3


async def test_probes(server: ServerThread) -> None:
    """/healthz answers, and /readyz is 200 with documents and 503 over an empty index."""
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        assert (await http.get("/readyz")).status_code == 200
        body = (await http.post("/v1/retrieve", json={"query": "timeouts"})).json()
        assert set(body) == {"passages", "took_ms"} and body["took_ms"] >= 0
    empty = httpx.ASGITransport(app=create_app(ListRetriever([])))
    async with httpx.AsyncClient(transport=empty, base_url="http://rag") as http:
        response = await http.get("/readyz")
    assert response.status_code == 503 and response.json()["error"]["code"] == "not_ready"


async def test_bearer_token(secured: ServerThread) -> None:
    """Without the token the service answers 401 (a counted service error); with it, passages."""
    anonymous = RagClient(secured.base_url)
    wrong = RagClient(secured.base_url, token="nope")
    right = RagClient(secured.base_url, token=TOKEN)
    try:
        for client in (anonymous, wrong):
            with pytest.raises(RagServiceError) as info:
                await client.search("redis")
            assert info.value.status_code == 401
        assert await right.search("redis")
    finally:
        for client in (anonymous, wrong, right):
            await client.aclose()
    async with httpx.AsyncClient(base_url=secured.base_url) as http:
        assert (await http.get("/healthz")).status_code == 200  # probes stay open


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"query": "   "}, "query"),
        ({"query": "x" * 2001}, "query"),
        ({"query": "redis", "k": 0}, "k"),
        ({"query": "redis", "k": 51}, "k"),
        ({"k": 3}, "query"),
    ],
)
async def test_validation_errors(server: ServerThread, body: dict[str, object], field: str) -> None:
    """Bad input gets a 422 JSON error naming the field."""
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        response = await http.post("/v1/retrieve", json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_request" and error["message"].startswith(field)


async def test_rejected_input_does_not_trip_breaker(server: ServerThread, clock: FakeClock) -> None:
    """Queries the service rejects raise RagRequestError and never open the rag_api breaker."""
    init_registry_sync(environ={}, clock=clock)
    client = RagClient(server.base_url)
    try:
        for _ in range(8):
            with pytest.raises(RagRequestError):
                await client.search("redis", k=99)
        assert await client.search("redis")
    finally:
        await client.aclose()
    assert rag_api_breaker.breaker is not None and rag_api_breaker.breaker.state.value == "closed"


async def test_server_down_opens_breaker_then_local_answers(clock: FakeClock) -> None:
    """Refused connections count; after five the breaker opens and answers come from the local index."""
    init_registry_sync(environ={}, clock=clock)
    client = RagClient(f"http://127.0.0.1:{closed_port()}", timeout_s=0.5)
    local = ListRetriever([passage(1, "Shared breaker state lives in Redis when REDIS_URL is set.")])
    assistant = Assistant(local=local, remote=client, generator=Generator(None, model="-", deadline_s=1.0))
    try:
        for _ in range(5):
            with pytest.raises(RagServiceError, match="unreachable"):
                await client.search("redis")
        with pytest.raises(CircuitOpenError):
            await client.search("redis")
        started = time.monotonic()
        events = [event async for event in assistant.answer("Where does breaker state live?")]
        assert time.monotonic() - started < 0.5
    finally:
        await assistant.aclose()
    done = events[-1]
    assert isinstance(done, AnswerDone) and done.retriever == "local" and done.mode == "extractive"
    assert "knowledge service unavailable (circuit open" in done.degraded[0]
    assert [c.number for c in done.citations] == [1]


async def test_server_hanging_times_out() -> None:
    """A server that accepts but never answers is abandoned after the client's timeout."""
    with silent_server() as url:
        client = RagClient(url, timeout_s=0.2)
        started = time.monotonic()
        try:
            with pytest.raises(RagServiceError, match="timed out"):
                await client.search("redis")
        finally:
            await client.aclose()
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize(
    ("status", "body"),
    [(200, b'{"results": []}'), (200, b"not json"), (200, b'{"passages": [{"doc_id": "x"}]}'), (503, b"{}")],
)
async def test_malformed_or_failing_responses_count(status: int, body: bytes, clock: FakeClock) -> None:
    """Malformed bodies and 5xx raise RagServiceError, counted as breaker failures."""
    init_registry_sync(environ={}, clock=clock)
    transport = httpx.MockTransport(lambda request: httpx.Response(status, content=body))
    client = RagClient("http://rag", transport=transport)
    try:
        with pytest.raises(RagServiceError):
            await client.search("redis")
    finally:
        await client.aclose()
    assert rag_api_breaker.breaker is not None and rag_api_breaker.breaker.metrics()["failures"] == 1


def test_command_line_serves_a_folder(tmp_path: Path) -> None:
    """`python -m rag.server --knowledge DIR --index PATH` indexes the folder and serves it."""
    (tmp_path / "kb").mkdir()
    (tmp_path / "kb" / "redis.md").write_text(DOCS["redis.md"])
    port = closed_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAG_", "OPENAI_"))}
    env["RAG_API_TOKEN"] = TOKEN
    cmd = [sys.executable, "-m", "rag.server", "--port", str(port), "--knowledge", str(tmp_path / "kb")]
    cmd += ["--index", str(tmp_path / "idx.db")]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "rag.server did not become ready"
            time.sleep(0.05)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        body = httpx.post(f"http://127.0.0.1:{port}/v1/retrieve", json={"query": "redis"}, headers=headers).json()
        assert body["passages"][0]["doc_id"] == "redis.md"
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    assert (tmp_path / "idx.db").exists()
