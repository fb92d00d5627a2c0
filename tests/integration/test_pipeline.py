"""The Assistant end to end: follow-ups, relevance, citations, input checks, the real local index."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from rag.generate import NO_RESULTS_TEXT, Generator
from rag.pipeline import (
    MAX_QUESTION_CHARS,
    AnswerDone,
    Assistant,
    TextDelta,
    Turn,
    build_local_retriever,
    retrieval_query,
)
from rag.settings import Settings
from rag.types import Retriever
from tests.fakes import ListRetriever, passage
from tests.fakes.openai_server import FakeOpenAI

CORPUS = [
    passage(1, "Set REDIS_URL to share breaker state between instances. Redis keys carry a prefix.", title="Redis"),
    passage(2, "The RAG client gives up after RAG_TIMEOUT_S seconds; the breaker counts each timeout.", title="RAG"),
    passage(3, "Voice input uses offline speech recognition when no API key is configured.", title="Voice"),
]


def extractive(local: Retriever) -> Assistant:
    """An assistant without LLM or remote service."""
    return Assistant(local=local, generator=Generator(None, model="-", deadline_s=1.0))


async def ask(assistant: Assistant, question: str, history: Sequence[Turn] = ()) -> tuple[str, AnswerDone]:
    """The streamed text and the final event of one answer."""
    parts: list[str] = []
    done: AnswerDone | None = None
    async for event in assistant.answer(question, history):
        if isinstance(event, TextDelta):
            parts.append(event.text)
        else:
            done = event
    assert done is not None
    return "".join(parts), done


async def test_follow_up_uses_previous_question() -> None:
    """A short follow-up with a pronoun is retrieved together with the previous question's words."""
    local = ListRetriever(CORPUS)
    history = [Turn("user", "How do I share breaker state with Redis?"), Turn("assistant", "Set REDIS_URL [1].")]
    text, done = await ask(extractive(local), "What prefix do its keys carry?", history)
    assert "Redis" in local.queries[-1] and "prefix" in local.queries[-1]
    assert done.retrieval_query == local.queries[-1]
    assert "[1]" in text and [c.passage.doc_id for c in done.citations] == ["doc1.md"]


def test_standalone_question_is_not_expanded() -> None:
    """A self-contained question is used as is, even with history."""
    history = [Turn("user", "How do I share breaker state with Redis?")]
    question = "How does the RAG client handle slow responses and timeouts?"
    assert retrieval_query(question, history) == question


async def test_nothing_relevant_says_so() -> None:
    """When the retrieved passages share no word with the question, the answer says so and cites nothing."""
    text, done = await ask(extractive(ListRetriever(CORPUS, match_all=True)), "pineapple pizza recipes")
    assert text == NO_RESULTS_TEXT and done.mode == "no_results" and done.citations == ()


async def test_invalid_input_gets_clear_message() -> None:
    """Empty and oversized questions get a message and retrieve nothing."""
    local = ListRetriever(CORPUS)
    text, done = await ask(extractive(local), "   ")
    assert done.mode == "invalid_input" and "type a question" in text
    text, done = await ask(extractive(local), "redis " * (MAX_QUESTION_CHARS // 5))
    assert done.mode == "invalid_input" and "too long" in text and str(MAX_QUESTION_CHARS) in text
    assert local.queries == []


@pytest.fixture
def llm() -> Iterator[FakeOpenAI]:
    """A fake LLM server for one test."""
    with FakeOpenAI() as server:
        yield server


async def test_llm_answer_never_cites_unretrieved_sources(llm: FakeOpenAI) -> None:
    """Citations in the LLM's answer are limited to retrieved passages and map to them."""
    llm.reply = ["Set REDIS_URL [1]", " and see [4] or [2]."]
    settings = Settings(openai_base_url=llm.base_url, llm_deadline_s=2.0, llm_timeout_s=1.0)
    assistant = Assistant.from_settings(settings, local=ListRetriever(CORPUS))
    try:
        text, done = await ask(assistant, "How do I share breaker state with Redis and what about timeouts?")
    finally:
        await assistant.aclose()
    assert text == "Set REDIS_URL [1] and see  or [2]."
    assert done.mode == "llm" and done.degraded == ()
    assert [(c.number, c.passage.doc_id) for c in done.citations] == [(1, "doc1.md"), (2, "doc2.md")]


async def test_real_local_index_answers(tmp_path: Path) -> None:
    """Over the real FTS5 index of a folder the answer quotes and cites the right document."""
    (tmp_path / "kb").mkdir()
    (tmp_path / "kb" / "deploy.md").write_text(
        "# Deployment\n\nRun several instances behind a sticky load balancer. Point them all at one Redis.\n"
    )
    (tmp_path / "kb" / "voice.md").write_text("# Voice\n\nThe microphone button starts a voice session.\n")
    settings = Settings(knowledge_dir=tmp_path / "kb", index_path=tmp_path / "data" / "index.db")
    index = build_local_retriever(settings)
    try:
        text, done = await ask(Assistant.from_settings(settings, local=index), "How do I run several instances?")
    finally:
        index.close()  # type: ignore[attr-defined]  # the FtsIndex behind the protocol
    assert "sticky load balancer" in text and "[1]" in text
    assert done.retriever == "local" and done.degraded == ()
    assert done.citations[0].passage.doc_id == "deploy.md"


async def test_unrelated_follow_up_says_so() -> None:
    """An unrelated follow-up borrows history words for retrieval but is not answered from them."""
    local = ListRetriever(CORPUS)
    history = [Turn("user", "How do I share breaker state with Redis?")]
    text, done = await ask(extractive(local), "What about pineapple pizza?", history)
    assert "Redis" in local.queries[-1]
    assert text == NO_RESULTS_TEXT and done.citations == ()
