"""Generation against a local OpenAI-compatible server through the real ``openai`` SDK, and its fallbacks."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator, Sequence

import pytest

from rag.generate import (
    CUT_OFF_NOTE,
    NO_RESULTS_TEXT,
    CitationFilter,
    Generation,
    Generator,
    TextDelta,
    build_llm_client,
    extractive_answer,
)
from rag.settings import Settings
from rag.types import Passage
from resilience import init_registry_sync, llm_breaker
from resilience.testing import FakeClock
from tests.fakes import passage
from tests.fakes.openai_server import FakeOpenAI, Fault

PASSAGES = [
    passage(1, "Redis stores the breaker state. Every instance reads the same keys.", title="Redis"),
    passage(2, "The app runs without Redis. Breaker state then stays in process memory.", title="Defaults"),
]
QUESTION = "Where is the breaker state stored with Redis?"


@pytest.fixture(scope="module")
def llm_server() -> Iterator[FakeOpenAI]:
    """One fake LLM server for the module."""
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def llm(llm_server: FakeOpenAI) -> FakeOpenAI:
    """The fake LLM server with no faults and no recorded requests."""
    llm_server.reset()
    return llm_server


def make_generator(llm: FakeOpenAI, *, deadline_s: float = 2.0, timeout_s: float = 1.0) -> Generator:
    """A generator whose real SDK client talks to the fake server with tiny timeouts."""
    settings = Settings(
        openai_base_url=llm.base_url, llm_model="fake-model", llm_timeout_s=timeout_s, llm_deadline_s=deadline_s
    )
    return Generator.from_settings(settings)


async def run(
    gen: Generator, question: str = QUESTION, passages: Sequence[Passage] = PASSAGES
) -> tuple[str, Generation]:
    """Drain one answer: the concatenated deltas and the final Generation."""
    parts: list[str] = []
    final: Generation | None = None
    stream: AsyncIterator[TextDelta | Generation] = gen.stream(question, passages)
    async for event in stream:
        if isinstance(event, TextDelta):
            parts.append(event.text)
        else:
            final = event
    assert final is not None
    if gen.client is not None:
        await gen.client.close()
    return "".join(parts), final


async def test_stream_with_citations(llm: FakeOpenAI) -> None:
    """A normal streamed answer keeps valid citations split across chunks and sends the sources in the prompt."""
    llm.reply = ["Redis stores ", "the breaker state [", "1]. Without it, ", "memory [2]."]
    text, final = await run(make_generator(llm))
    assert text == "Redis stores the breaker state [1]. Without it, memory [2]."
    assert final.mode == "llm" and final.cited == (1, 2) and final.degraded == () and not final.cut_off
    [request] = llm.requests
    assert request["stream"] is True and request["model"] == "fake-model"
    system = request["messages"][0]["content"]
    assert "[1] Redis" in system and "[2] Defaults" in system


async def test_invented_citation_dropped(llm: FakeOpenAI) -> None:
    """A citation number beyond the retrieved passages is removed from the text and reported."""
    llm.reply = ["Redis keeps it [1][7]. See [3, 2]."]
    text, final = await run(make_generator(llm))
    assert text == "Redis keeps it [1]. See [2]."
    assert final.cited == (1, 2) and final.dropped_citations == (7, 3)


@pytest.mark.parametrize(("status", "error"), [(500, "InternalServerError"), (429, "RateLimitError")])
async def test_error_status_falls_back_to_extractive(llm: FakeOpenAI, status: int, error: str) -> None:
    """A 5xx or 429 before any token gives an extractive, cited answer marked degraded."""
    llm.fault = Fault(status=status)
    text, final = await run(make_generator(llm))
    assert final.mode == "extractive"
    assert "Redis stores the breaker state. [1]" in text
    assert final.cited and set(final.cited) <= {1, 2}
    assert len(final.degraded) == 1 and error in final.degraded[0] and "extractive" in final.degraded[0]


async def test_hang_hits_deadline_then_extractive(llm: FakeOpenAI) -> None:
    """A server that never answers is cut by the deadline and the answer is extractive."""
    llm.fault = Fault(hang=True)
    started = time.monotonic()
    _text, final = await run(make_generator(llm, deadline_s=0.3, timeout_s=5.0))
    assert time.monotonic() - started < 2.0
    assert final.mode == "extractive" and "deadline" in final.degraded[0]


async def test_stream_cut_midway_is_marked_and_counted(llm: FakeOpenAI, clock: FakeClock) -> None:
    """A connection dropped mid-stream keeps what was said, marks it cut off and counts a breaker failure."""
    init_registry_sync(environ={}, clock=clock)
    llm.reply = ["Redis stores ", "the breaker state [1].", " More ", "text."]
    llm.fault = Fault(cut_after=2)
    text, final = await run(make_generator(llm))
    assert text == "Redis stores the breaker state [1]." + CUT_OFF_NOTE
    assert final.cut_off and final.mode == "llm" and final.cited == (1,)
    assert "incomplete" in final.degraded[0]
    assert llm_breaker.breaker is not None and llm_breaker.breaker.metrics()["failures"] == 1


async def test_slow_tokens_past_deadline_cut_off(llm: FakeOpenAI) -> None:
    """Tokens arriving too slowly end the answer at the deadline, marked cut off."""
    llm.reply = ["Redis ", "stores ", "state ", "[1]."]
    llm.fault = Fault(delay_s=0.15)
    text, final = await run(make_generator(llm, deadline_s=0.4))
    assert final.cut_off and text.startswith("Redis ") and text.endswith(CUT_OFF_NOTE)


async def test_open_breaker_skips_the_server(llm: FakeOpenAI, clock: FakeClock) -> None:
    """Once the llm breaker is open, answers are extractive and the server sees no request."""
    init_registry_sync(environ={}, clock=clock)
    llm.fault = Fault(status=500)
    for _ in range(5):
        _text, final = await run(make_generator(llm))
        assert final.mode == "extractive"
    seen = len(llm.requests)
    llm.fault = None
    _text, final = await run(make_generator(llm))
    assert len(llm.requests) == seen
    assert final.mode == "extractive" and "circuit open" in final.degraded[0]


async def test_no_llm_configured_is_extractive_not_degraded() -> None:
    """Without an LLM the answer is extractive, cited and not flagged as degraded."""
    assert build_llm_client(Settings()) is None
    text, final = await run(Generator(None, model="unused", deadline_s=1.0))
    assert final.mode == "extractive" and final.degraded == () and "[1]" in text


async def test_no_passages_says_so_without_calling_llm(llm: FakeOpenAI) -> None:
    """With nothing retrieved the answer says so, cites nothing and never calls the LLM."""
    text, final = await run(make_generator(llm), passages=[])
    assert text == NO_RESULTS_TEXT and final.mode == "no_results" and final.cited == ()
    assert llm.requests == []


def test_citation_filter_handles_split_and_plain_brackets() -> None:
    """Citations split across pieces are joined; brackets that are not citations pass through."""
    flt = CitationFilter(2)
    out = "".join(flt.feed(piece) for piece in ["See [", "see below] and [", "2", "] or [9]", " end [1"]) + flt.flush()
    assert out == "See [see below] and [2] or  end [1"
    assert flt.used == [2] and flt.dropped == [9]


def test_extractive_answer_picks_overlapping_sentences() -> None:
    """The extractive answer quotes sentences sharing query words, each with its passage's number."""
    text, cited = extractive_answer("Which keys does every instance read?", PASSAGES)
    assert "Every instance reads the same keys. [1]" in text and cited == [1]
    assert extractive_answer("pineapple pizza", PASSAGES) == (NO_RESULTS_TEXT, [])
