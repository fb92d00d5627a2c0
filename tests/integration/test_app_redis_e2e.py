"""Two real app instances sharing breaker state through Redis, driven over Socket.IO like browsers."""

from __future__ import annotations

from pathlib import Path

from .chainlit_driver import ChatClient, chainlit_server, free_port
from .conftest import RedisServer


async def _ask(url: str, text: str) -> str:
    client = ChatClient(url)
    await client.connect()
    try:
        return (await client.ask(text)).assistant_text
    finally:
        await client.close()


async def test_trip_in_one_instance_is_seen_by_the_other(redis_server: RedisServer, tmp_path: Path) -> None:
    """Instance A trips rag_api on a dead RAG service; instance B's next answer already says the circuit is open."""
    dead_rag = f"http://127.0.0.1:{free_port()}"
    common = {
        "REDIS_URL": redis_server.url,
        "RESILIENCE_KEY_PREFIX": f"e2e{free_port()}",
        "RAG_API_URL": dead_rag,
        "RESILIENCE__RAG_API__FAILURE_THRESHOLD": "2",
    }
    env_a = {**common, "INDEX_PATH": str(tmp_path / "a.sqlite3")}
    env_b = {**common, "INDEX_PATH": str(tmp_path / "b.sqlite3")}
    with (
        chainlit_server(env_a, log=tmp_path / "a.log") as url_a,
        chainlit_server(env_b, log=tmp_path / "b.log") as url_b,
    ):
        first_b = await _ask(url_b, "What is the half-open state?")
        assert "unreachable" in first_b  # B tried the dead service itself: the breaker was closed
        for question in ("How do circuit breakers work here?", "How do I configure Redis?"):
            answer = await _ask(url_a, question)
            assert "[1]" in answer and "Degraded mode" in answer
        after = await _ask(url_b, "How do I run the tests?")
    assert "[1]" in after
    assert "circuit open" in after.lower(), after  # B never failed twice itself: it learned from A via Redis
