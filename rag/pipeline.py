"""The answer pipeline the app calls: question (+ history) -> retrieval -> grounded, cited answer.

:class:`Assistant` owns its clients (the optional :class:`~rag.client.RagClient`, the local retriever,
the optional LLM client) and never raises for a failing dependency. Each degradation is reported as a
human-readable reason in the final :class:`AnswerDone`:

- remote RAG service unset: the local index answers (normal, not degraded);
- remote RAG service failing or its breaker open: the local index answers (degraded);
- LLM unset: extractive answer (normal); LLM failing or its breaker open: extractive (degraded);
- LLM failing mid-answer: the answer is marked cut off (degraded);
- embeddings configured (``EMBEDDINGS_MODEL``) but failing or their breaker open: the local index
  answers with BM25 alone (degraded).

:func:`build_local_retriever` is the one place that builds the embedded index.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from resilience import CircuitOpenError

from .client import RagClient, RagRequestError, RagServiceError
from .generate import (
    STOPWORDS,
    Generation,
    Generator,
    TextDelta,
    Turn,
    content_stems,
    describe_open,
    overlap,
)
from .settings import MAX_QUERY_CHARS, Settings
from .types import Passage, Retriever

__all__ = [
    "MAX_QUESTION_CHARS",
    "AnswerDone",
    "AnswerEvent",
    "Assistant",
    "Citation",
    "TextDelta",
    "Turn",
    "build_local_retriever",
    "retrieval_query",
]

logger = logging.getLogger(__name__)

MAX_QUESTION_CHARS = 4000
EMPTY_QUESTION_TEXT = "Please type a question."
_FOLLOW_UP_TEXT = (
    "it its that this these those they them their there he she him her one ones same also else more other another"
)
_FOLLOW_UP_WORDS = frozenset(_FOLLOW_UP_TEXT.split())
_FOLLOW_UP_OPENERS = ("and ", "what about", "how about", "also", "then", "so ")
# A question of this many content words or fewer ("timeouts?") is read as a follow-up. Two-word
# questions such as "run app" are usually standalone, and expanding them pulls the previous topic in.
SHORT_QUESTION_WORDS = 1


def build_local_retriever(
    settings: Settings, *, knowledge_dir: str | Path | None = None, index_path: str | Path | None = None
) -> Retriever:
    """Open the embedded FTS5 index and sync it with the knowledge folder (blocking: call in a thread).

    A missing knowledge folder leaves the index as it is (logged). An index file that cannot be
    created falls back to an in-memory index, so the app still answers. With ``EMBEDDINGS_MODEL`` set,
    the index also stores chunk vectors and fuses them with BM25.
    """
    from .embeddings import build_embedder
    from .index import FtsIndex  # lazily: keeps this module importable without the index's deps

    folder = Path(knowledge_dir) if knowledge_dir is not None else settings.knowledge_dir
    path = Path(index_path) if index_path is not None else settings.index_path
    embedder = build_embedder(settings)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        index = FtsIndex.open(path, embedder=embedder)
    except OSError as exc:  # read-only disk, bad path: answer from memory rather than not at all
        logger.warning("rag.index_in_memory path=%s reason=%s", path, exc)
        index = FtsIndex.open(":memory:", embedder=embedder)
    if folder.is_dir():
        report = index.sync_folder(folder)
        logger.info(
            "rag.index_synced folder=%s added=%d updated=%d removed=%d unchanged=%d failed=%d chunks=%d",
            folder,
            len(report.added),
            len(report.updated),
            len(report.removed),
            len(report.unchanged),
            len(report.failed),
            len(index),
        )
        for failure in report.failed:
            logger.warning("rag.ingest_failed %s", failure)
    else:
        logger.warning("rag.knowledge_missing folder=%s: answering from the existing index only", folder)
    return index


def retrieval_query(question: str, history: Sequence[Turn]) -> str:
    """The text to retrieve with: the question, plus the previous user question's content words when
    the question looks like a follow-up (short, a pronoun, or an opener such as "what about").

    The result is capped at the RAG service's query limit.
    """
    question = " ".join(question.split())
    previous = next((t.content for t in reversed(history) if t.role == "user"), None)
    if previous:
        words = [w.lower() for w in re.findall(r"[^\W_]+", question)]
        content = [w for w in words if w not in STOPWORDS]
        follow_up = (
            len(content) <= SHORT_QUESTION_WORDS
            or any(w in _FOLLOW_UP_WORDS for w in words)
            or question.lower().startswith(_FOLLOW_UP_OPENERS)
        )
        if follow_up:
            have = set(content_stems(question))
            extra: list[str] = []
            for word in re.findall(r"[^\W_]+", previous):
                stem = content_stems(word)
                if stem and stem[0] not in have and word.lower() not in _FOLLOW_UP_WORDS:
                    have.add(stem[0])
                    extra.append(word)
            if extra:
                question = f"{question} {' '.join(extra)}"
    if len(question) > MAX_QUERY_CHARS:
        question = question[:MAX_QUERY_CHARS].rsplit(" ", 1)[0]
    return question


@dataclass(frozen=True, slots=True)
class Citation:
    """A source the answer cites as ``[number]``."""

    number: int
    passage: Passage


@dataclass(frozen=True, slots=True)
class AnswerDone:
    """The last event of an answer: what was said and how it was produced.

    Args:
        text: the whole answer as streamed.
        citations: the sources cited in ``text``, by number.
        mode: ``"llm"``, ``"extractive"``, ``"no_results"``, ``"invalid_input"`` or ``"unavailable"``.
        degraded: human-readable reasons the answer is worse than usual (empty when all went well).
        cut_off: the LLM failed mid-answer; ``text`` is incomplete.
        retrieval_query: the query used for retrieval (question plus follow-up context).
        retriever: ``"remote"``, ``"local"`` or ``"none"``.
    """

    text: str
    citations: tuple[Citation, ...]
    mode: Literal["llm", "extractive", "no_results", "invalid_input", "unavailable"]
    degraded: tuple[str, ...] = ()
    cut_off: bool = False
    retrieval_query: str = ""
    retriever: Literal["remote", "local", "none"] = "none"


AnswerEvent = TextDelta | AnswerDone


class Assistant:
    """Answers questions from the knowledge base, degrading instead of failing.

    Args:
        local: the in-process retriever (always available; the fallback of the remote service).
        generator: produces the answer text.
        remote: the RAG service client, or None to use only ``local``.
        top_k: passages retrieved per question.
    """

    def __init__(
        self, *, local: Retriever, generator: Generator, remote: RagClient | None = None, top_k: int = 5
    ) -> None:
        self.local = local
        self.generator = generator
        self.remote = remote
        self.top_k = top_k

    @classmethod
    def from_settings(cls, settings: Settings, *, local: Retriever) -> Assistant:
        """An assistant with the RAG client and LLM client that ``settings`` configure."""
        remote = None
        if settings.rag_api_url:
            remote = RagClient(settings.rag_api_url, token=settings.rag_api_token, timeout_s=settings.rag_timeout_s)
        return cls(local=local, generator=Generator.from_settings(settings), remote=remote, top_k=settings.rag_top_k)

    async def aclose(self) -> None:
        """Close the HTTP clients."""
        if self.remote is not None:
            await self.remote.aclose()
        if self.generator.client is not None:
            await self.generator.client.close()

    async def answer(self, question: str, history: Sequence[Turn] = ()) -> AsyncIterator[AnswerEvent]:
        """Stream the answer to ``question`` as :class:`TextDelta` pieces, then one :class:`AnswerDone`.

        Args:
            question: the user's message.
            history: earlier turns, oldest first (used for follow-ups and as LLM context).
        """
        question = question.strip()
        if not question or len(question) > MAX_QUESTION_CHARS:
            text = (
                EMPTY_QUESTION_TEXT
                if not question
                else f"Your question is too long ({len(question)} characters; the limit is "
                f"{MAX_QUESTION_CHARS}). Please shorten it."
            )
            yield TextDelta(text)
            yield AnswerDone(text, (), "invalid_input")
            return
        query = retrieval_query(question, history)
        degraded: list[str] = []
        try:
            passages, source = await self._retrieve(query, degraded)
        except Exception:
            logger.exception("rag.retrieval_failed: local index failed too")
            text = "The knowledge base is not available right now. Please try again in a moment."
            degraded.append("knowledge base unavailable")
            yield TextDelta(text)
            yield AnswerDone(text, (), "unavailable", tuple(degraded), retrieval_query=query)
            return
        # Relevant = shares a word with the question itself: a follow-up's borrowed words help ranking
        # but must not make an unrelated question ("pineapple pizza") look answered.
        own = question if content_stems(question) else query
        relevant = [p for p in passages if overlap(own, p) > 0]
        if len(relevant) < len(passages):
            logger.debug("rag.irrelevant_dropped count=%d", len(passages) - len(relevant))
        generation: Generation | None = None
        async for event in self.generator.stream(question, relevant, history, context=query):
            if isinstance(event, Generation):
                generation = event
            else:
                yield event
        assert generation is not None  # Generator.stream always ends with one
        yield AnswerDone(
            text=generation.text,
            citations=tuple(Citation(n, relevant[n - 1]) for n in sorted(generation.cited)),
            mode=generation.mode,
            degraded=(*degraded, *generation.degraded),
            cut_off=generation.cut_off,
            retrieval_query=query,
            retriever=source,
        )

    async def _retrieve(self, query: str, degraded: list[str]) -> tuple[list[Passage], Literal["remote", "local"]]:
        if self.remote is not None:
            try:
                return await self.remote.search(query, self.top_k), "remote"
            except CircuitOpenError as exc:
                reason = describe_open(exc)
                logger.info("rag.remote_skipped reason=%s", reason)
            except RagRequestError as exc:
                reason = f"it rejected the query: {exc}"
                logger.warning("rag.remote_rejected %s", exc)
            except Exception as exc:
                reason = exc.reason if isinstance(exc, RagServiceError) else type(exc).__name__
                logger.warning("rag.remote_failed %s", exc)
            degraded.append(f"knowledge service unavailable ({reason}) — answered from the local index")
        detailed = getattr(self.local, "search_detailed", None)  # FtsIndex: says when embeddings failed
        if detailed is None:
            return await asyncio.to_thread(self.local.search, query, self.top_k), "local"
        result = await asyncio.to_thread(detailed, query, self.top_k)
        if result.degraded:
            degraded.append(result.degraded)
        passages: list[Passage] = result.passages
        return passages, "local"
