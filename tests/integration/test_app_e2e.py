"""The real app under ``chainlit run``, driven over Socket.IO: embedded defaults and a dead RAG service."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .chainlit_driver import ChatClient, chainlit_server, free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def default_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app with no configuration at all (what ``make run`` serves)."""
    tmp = tmp_path_factory.mktemp("app")
    with chainlit_server({"INDEX_PATH": str(tmp / "index.sqlite3")}, log=tmp / "chainlit.log") as url:
        yield url


@pytest.fixture(scope="module")
def dead_rag_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app configured with a RAG service that refuses connections."""
    tmp = tmp_path_factory.mktemp("app-dead-rag")
    env = {
        "INDEX_PATH": str(tmp / "index.sqlite3"),
        "RAG_API_URL": f"http://127.0.0.1:{free_port()}",
        "RESILIENCE__RAG_API__FAILURE_THRESHOLD": "2",
    }
    with chainlit_server(env, log=tmp / "chainlit.log") as url:
        yield url


async def _session(url: str) -> ChatClient:
    client = ChatClient(url)
    await client.connect()
    return client


async def test_answers_from_the_knowledge_folder_with_citations(default_app: str) -> None:
    """With no configuration, a question is answered from knowledge/ as a stream, with numbered sources."""
    client = await _session(default_app)
    try:
        turn = await client.ask("How do I run several instances with Redis?")
    finally:
        await client.close()
    text = turn.assistant_text
    assert "stream_token" in turn.names()
    assert "[1]" in text and "Sources" in text
    assert "redis" in text.lower()
    assert "Traceback" not in text
    assert "Degraded mode" not in text  # nothing is configured, so nothing is missing


async def test_follow_up_question_uses_history(default_app: str) -> None:
    """A short follow-up is answered in the context of the previous question."""
    client = await _session(default_app)
    try:
        await client.ask("What does the half-open state do?")
        turn = await client.ask("And how many trial calls does it allow?")
    finally:
        await client.close()
    assert "[1]" in turn.assistant_text


@pytest.mark.parametrize(
    ("text", "expected"),
    [("   ", "question"), ("x" * 5000, "too long")],
)
async def test_bad_input_gets_a_clear_message(default_app: str, text: str, expected: str) -> None:
    """Empty and oversize messages get a clear, friendly reply instead of an error."""
    client = await _session(default_app)
    try:
        turn = await client.ask(text)
    finally:
        await client.close()
    assert expected in turn.assistant_text.lower()
    assert "Traceback" not in turn.assistant_text


async def test_dead_rag_service_degrades_then_opens_breaker(dead_rag_app: str) -> None:
    """A dead RAG API still yields answers (local index, marked degraded); once open, turns stay fast."""
    client = await _session(dead_rag_app)
    try:
        first = await client.ask("How do circuit breakers work here?")
        await client.ask("What is the half-open state?")
        opened = await client.ask("How do I configure Redis?")
    finally:
        await client.close()
    assert "[1]" in first.assistant_text
    assert "degraded" in first.assistant_text.lower()
    assert "circuit open" in opened.assistant_text.lower()
    assert opened.seconds < 1.0
