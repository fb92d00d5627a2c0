"""Grounded answers with numbered citations: streamed from an LLM, or extractive when it is unavailable.

Citations are ``[n]``, where ``n`` is the 1-based position of a passage in the list given to
:meth:`Generator.stream`. Invariants:

- Only passages that were retrieved can be cited: citation numbers in the LLM's output are checked
  while streaming (:class:`CitationFilter`) and out-of-range ones are dropped (and reported).
- The user never sees a stack trace: every LLM failure ends in an answer. Before the first visible
  token it becomes an extractive answer; after it, the answer ends with a cut-off note.
- The LLM call is one async generator under ``llm_breaker``, so a failure mid-stream counts, and a
  hard deadline (``LLM_DEADLINE_S``) bounds the whole answer (hitting it counts as a failure too).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from resilience import CircuitOpenError, llm_breaker

from .settings import Settings
from .types import Passage

if TYPE_CHECKING:
    from openai import AsyncOpenAI
    from openai.types.chat import ChatCompletionMessageParam

__all__ = [
    "NO_RESULTS_TEXT",
    "CitationFilter",
    "Generation",
    "Generator",
    "LlmError",
    "TextDelta",
    "Turn",
    "build_llm_client",
    "content_stems",
    "extractive_answer",
    "overlap",
]

logger = logging.getLogger(__name__)

NO_RESULTS_TEXT = (
    "I couldn't find anything about that in the knowledge base. "
    "Try rephrasing, or ask about a topic the documents cover."
)
CUT_OFF_NOTE = "\n\n*(Answer cut off: the language model stopped responding.)*"
EXTRACTIVE_INTRO = "Here is what the knowledge base says:\n\n"
MAX_EXTRACT_SENTENCES = 3
MAX_SENTENCE_CHARS = 400
MAX_HISTORY_TURNS = 4
MAX_HISTORY_CHARS = 1000

# --------------------------------------------------------------------------------------------- text

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_STOPWORDS_TEXT = """a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have
    having he her here hers herself him himself his how i if in into is it its itself just me more most my
    myself no nor not now of off on once only or other our ours ourselves out over own same she should so
    some such than that the their theirs them themselves then there these they this those through to too
    under until up very was we were what when where which while who whom why will with would you your yours
    yourself yourselves tell explain please show give know get got also use used using one ones thing things
    way ways much many may might must shall let lets"""
STOPWORDS = frozenset(_STOPWORDS_TEXT.split())


def _stem(word: str) -> str:
    # A deliberately crude stemmer (prefix of 6): "configure"/"configuration", "breaker"/"breakers" and
    # "deploy"/"deployment" meet; good enough to rank sentences and to spot irrelevant results.
    return word[:6] if len(word) > 6 else word.rstrip("s") or word


def content_stems(text: str) -> list[str]:
    """Lower-cased, stemmed words of ``text`` without stopwords, in order."""
    return [_stem(w) for w in (m.group().lower() for m in _WORD.finditer(text)) if w not in STOPWORDS]


def _shared(wanted: set[str], have: set[str]) -> int:
    """How many of ``wanted`` occur in ``have``; a stem also matches one it is a prefix of (or the reverse)
    when the shorter has 3+ letters, so "run" meets "runnin(g)" as the index's Porter stemmer would."""
    count = 0
    for word in wanted:
        if word in have or (
            len(word) >= 3 and any(h.startswith(word) or (len(h) >= 3 and word.startswith(h)) for h in have)
        ):
            count += 1
    return count


def overlap(query: str, passage: Passage) -> int:
    """How many distinct content stems of ``query`` occur in the passage (title, heading or text).

    Zero when ``query`` has no content words at all.
    """
    wanted = set(content_stems(query))
    if not wanted:
        return 0
    have = set(content_stems(f"{passage.title} {passage.heading} {passage.text}"))
    return _shared(wanted, have)


# A sentence ends at . ! ? before a capital (or a quote, code or bold); list items flattened into one
# line ("... missing. - Optional: ...", "types: - md") are split too, their marker dropped.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?:[-*]\s+)?(?=[\"'(\[]?[A-Z0-9`*])|(?<=:)\s+[-*]\s+")
_LIST_MARK = re.compile(r"^\s*(?:[-*+>]|\d+[.)]|#{1,6})\s+")


def _sentences(text: str) -> list[str]:
    out: list[str] = []
    in_code = False
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if line.startswith("```"):
            in_code = not in_code
            continue
        if in_code or not line or line.startswith(("#", "|")):
            continue
        line = _LIST_MARK.sub("", line)
        out.extend(part.strip() for part in _SENTENCE_END.split(line) if part.strip())
    return out


def extractive_answer(question: str, passages: Sequence[Passage], *, context: str = "") -> tuple[str, list[int]]:
    """The best few sentences of ``passages`` for ``question``, each followed by its citation.

    Sentences are ranked by the question words they share, each weighted by its rarity among the
    candidate sentences (words of ``context``, such as the previous question of a follow-up, count half;
    a question word in the passage's title or heading adds a bonus; earlier passages win ties). A sentence must share
    a word with the question itself (with ``context`` when the question has no content words). At
    most three are kept, none with less than half the best sentence's score, shown in passage order.
    Returns the text and the cited numbers; when no sentence qualifies, :data:`NO_RESULTS_TEXT` and
    no citations.
    """
    wanted = set(content_stems(question))
    extra = set(content_stems(context)) - wanted
    if not wanted:
        wanted, extra = extra, set()
    candidates: list[tuple[int, int, str, set[str], float]] = []
    for number, passage in enumerate(passages, start=1):
        # A question word in the passage's title or heading makes its sentences more likely on topic.
        bonus = 0.5 * _shared(wanted, set(content_stems(f"{passage.title} {passage.heading}")))
        for position, sentence in enumerate(_sentences(passage.text)):
            if len(sentence.split()) >= 4:  # headings and fragments say nothing on their own
                candidates.append((number, position, sentence, set(content_stems(sentence)), bonus))
    # Rarer question words (in fewer candidate sentences) weigh more: "down" beats "service".
    total = len(candidates)
    weight = {
        word: math.log(1.0 + total / (1 + sum(1 for c in candidates if _shared({word}, c[3]))))
        for word in wanted | extra
    }
    scored: list[tuple[float, float, int, int, str]] = []
    for number, position, sentence, words, bonus in candidates:
        own = [w for w in wanted if _shared({w}, words)]
        if not own:
            continue
        hits = sum(weight[w] for w in own) + 0.5 * sum(weight[w] for w in extra if _shared({w}, words))
        score = hits + bonus - 0.1 * number - 0.002 * len(words)
        scored.append((score, hits + bonus, number, position, sentence))
    scored.sort(key=lambda item: -item[0])
    best_hits = max((item[1] for item in scored), default=0)
    chosen: list[tuple[int, int, str]] = []
    seen: set[str] = set()
    for _score, hits, number, position, sentence in scored:
        if hits * 2 < best_hits:
            break  # far weaker than the best sentence: more noise than help (sorted, so the rest too)
        key = " ".join(content_stems(sentence))
        if key in seen:
            continue  # overlapping chunks repeat sentences
        seen.add(key)
        chosen.append((number, position, sentence))
        if len(chosen) == MAX_EXTRACT_SENTENCES:
            break
    if not chosen:
        return NO_RESULTS_TEXT, []
    chosen.sort()
    lines = []
    for number, _position, sentence in chosen:
        text = sentence if len(sentence) <= MAX_SENTENCE_CHARS else sentence[: MAX_SENTENCE_CHARS - 1] + "…"
        lines.append(f"- {text} [{number}]")
    cited = sorted({number for number, _, _ in chosen})
    return EXTRACTIVE_INTRO + "\n".join(lines), cited


# ------------------------------------------------------------------------------------- citations

_CITATION = re.compile(r"\[\s*(\d{1,3}(?:\s*[,;]\s*\d{1,3})*)\s*\]")
_PARTIAL_CITATION = re.compile(r"\[[\d,;\s]{0,30}")


class CitationFilter:
    """Checks ``[n]`` citations in streamed text against the number of passages.

    Text is fed in arbitrary pieces; a possible citation split across pieces is held back until it
    is complete. Valid citations are written ``[1][2]``; numbers outside ``1..count`` are dropped and
    recorded in :attr:`dropped`.

    Args:
        count: how many passages can be cited.
    """

    def __init__(self, count: int) -> None:
        self.count = count
        self.used: list[int] = []
        self.dropped: list[int] = []
        self._pending = ""

    def feed(self, text: str) -> str:
        """Text that is safe to show now (citations checked); may hold back a trailing ``[...``."""
        buffer = self._pending + text
        out: list[str] = []
        while True:
            start = buffer.find("[")
            if start < 0:
                out.append(buffer)
                buffer = ""
                break
            out.append(buffer[:start])
            rest = buffer[start:]
            match = _CITATION.match(rest)
            if match:
                out.append(self._rewrite(match.group(1)))
                buffer = rest[match.end() :]
                continue
            if _PARTIAL_CITATION.fullmatch(rest):
                buffer = rest  # may still become a citation: wait for more text
                break
            out.append("[")
            buffer = rest[1:]
        self._pending = buffer
        return "".join(out)

    def flush(self) -> str:
        """The held-back text at the end of the stream (an unfinished ``[12`` is plain text)."""
        pending, self._pending = self._pending, ""
        return pending

    def _rewrite(self, numbers_text: str) -> str:
        kept: list[int] = []
        for part in re.split(r"[,;]", numbers_text):
            number = int(part)
            if 1 <= number <= self.count:
                kept.append(number)
                if number not in self.used:
                    self.used.append(number)
            else:
                self.dropped.append(number)
        return "".join(f"[{n}]" for n in kept)


# ------------------------------------------------------------------------------------ generation


@dataclass(frozen=True, slots=True)
class Turn:
    """One earlier message of the conversation."""

    role: Literal["user", "assistant"]
    content: str


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the answer's text, to append to what was shown."""

    text: str


@dataclass(frozen=True, slots=True)
class Generation:
    """How an answer was produced (the last item of :meth:`Generator.stream`).

    Args:
        text: the whole answer as shown (the concatenated deltas).
        cited: valid citation numbers used, in order of first use.
        mode: ``"llm"``, ``"extractive"`` or ``"no_results"``.
        degraded: human-readable reasons the answer is worse than usual (empty when all went well).
        cut_off: the LLM failed mid-answer; the text is incomplete.
        dropped_citations: out-of-range numbers the LLM cited, removed from the text.
    """

    text: str
    cited: tuple[int, ...]
    mode: Literal["llm", "extractive", "no_results"]
    degraded: tuple[str, ...] = ()
    cut_off: bool = False
    dropped_citations: tuple[int, ...] = ()


class LlmError(Exception):
    """The LLM call failed in a way the SDK does not report itself (deadline, empty answer)."""


SYSTEM_PROMPT = """You answer questions using ONLY the numbered sources below.
- After each statement, cite the source(s) it comes from as [n], e.g. [1] or [1][3].
- Cite only the numbers listed below. Never invent sources, facts, URLs or numbers.
- If the sources do not contain the answer, say so briefly instead of guessing.
- Be concise: a few sentences or a short list.

Sources:
{sources}"""


def build_messages(question: str, passages: Sequence[Passage], history: Sequence[Turn]) -> list[dict[str, str]]:
    """The chat messages of a grounded request: instructions with numbered sources, recent turns, question."""
    blocks = []
    for number, passage in enumerate(passages, start=1):
        where = f"{passage.title} > {passage.heading}" if passage.heading else passage.title
        blocks.append(f"[{number}] {where} ({passage.source})\n{passage.text.strip()}")
    messages = [{"role": "system", "content": SYSTEM_PROMPT.format(sources="\n\n".join(blocks))}]
    messages.extend(
        {"role": turn.role, "content": turn.content[:MAX_HISTORY_CHARS]} for turn in list(history)[-MAX_HISTORY_TURNS:]
    )
    messages.append({"role": "user", "content": question})
    return messages


def build_llm_client(settings: Settings) -> AsyncOpenAI | None:
    """The LLM client for ``settings`` (no retries, explicit timeouts), or None when no LLM is configured."""
    if not settings.llm_enabled:
        return None
    from openai import AsyncOpenAI, Timeout

    t = settings.llm_timeout_s
    return AsyncOpenAI(
        # A local OpenAI-compatible server may need no key, but the SDK insists on one.
        api_key=settings.openai_api_key or "unused",
        base_url=settings.openai_base_url or "https://api.openai.com/v1",
        max_retries=0,  # the breaker and the extractive fallback handle failures; retries only add latency
        timeout=Timeout(connect=min(t, 5.0), read=t, write=t, pool=t),
    )


@llm_breaker
async def _completion_tokens(
    client: AsyncOpenAI, model: str, messages: list[dict[str, str]], deadline: float
) -> AsyncIterator[str]:
    """Content deltas of one streamed chat completion; raises past ``deadline`` (event-loop time)."""
    typed: list[ChatCompletionMessageParam] = messages  # type: ignore[assignment]  # plain dicts of the same shape
    try:
        async with asyncio.timeout_at(deadline):
            stream = await client.chat.completions.create(model=model, messages=typed, stream=True, temperature=0.2)
    except TimeoutError:
        raise LlmError("no response before the answer deadline") from None
    try:
        chunks = aiter(stream)
        while True:
            # The deadline wraps each await, never a yield: a timeout scope spanning a yield would
            # cancel the consumer's code instead of this generator.
            try:
                async with asyncio.timeout_at(deadline):
                    chunk = await anext(chunks)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise LlmError("the answer deadline passed mid-stream") from None
            for choice in chunk.choices:
                if choice.delta is not None and choice.delta.content:
                    yield choice.delta.content
    finally:
        await stream.close()


def describe_open(exc: CircuitOpenError) -> str:
    """A user-facing reason for a rejected call (a forced-open breaker has no retry time)."""
    if math.isinf(exc.retry_after_s):
        return "switched off by an operator"
    return f"circuit open, retry in {max(1, math.ceil(exc.retry_after_s))}s"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, CircuitOpenError):
        return describe_open(exc)
    if isinstance(exc, LlmError):
        return str(exc)
    status = getattr(exc, "status_code", None)
    return f"{type(exc).__name__} {status}" if status else type(exc).__name__


class Generator:
    """Turns a question and its passages into a streamed, cited answer.

    Args:
        client: the LLM client, or None for extractive answers only.
        model: chat model name.
        deadline_s: hard limit on one whole LLM answer.
    """

    def __init__(self, client: AsyncOpenAI | None, *, model: str, deadline_s: float) -> None:
        self.client = client
        self.model = model
        self.deadline_s = deadline_s

    @classmethod
    def from_settings(cls, settings: Settings) -> Generator:
        """A generator using the LLM configured in ``settings`` (if any)."""
        return cls(build_llm_client(settings), model=settings.llm_model, deadline_s=settings.llm_deadline_s)

    async def stream(
        self,
        question: str,
        passages: Sequence[Passage],
        history: Sequence[Turn] = (),
        *,
        context: str = "",
    ) -> AsyncIterator[TextDelta | Generation]:
        """Yield the answer as :class:`TextDelta` pieces, then one :class:`Generation`.

        Never raises for an LLM failure (cancellation still propagates).

        Args:
            question: the user's question (what the LLM answers).
            passages: the sources, cited as ``[1]``.. in this order.
            history: earlier turns, given to the LLM as context.
            context: extra words for ranking extractive sentences (the retrieval query of a
                follow-up question, which adds the previous question's words).
        """
        if not passages:
            yield TextDelta(NO_RESULTS_TEXT)
            yield Generation(NO_RESULTS_TEXT, (), "no_results")
            return
        if self.client is None:
            async for event in self._extractive(question, passages, (), context=context):
                yield event
            return
        citations = CitationFilter(len(passages))
        shown: list[str] = []
        deadline = asyncio.get_running_loop().time() + self.deadline_s
        messages = build_messages(question, passages, history)
        try:
            async for piece in _completion_tokens(self.client, self.model, messages, deadline):
                text = citations.feed(piece)
                if text:
                    shown.append(text)
                    yield TextDelta(text)
            tail = citations.flush()
            if tail:
                shown.append(tail)
                yield TextDelta(tail)
            if not "".join(shown).strip():
                raise LlmError("empty answer")
        except Exception as exc:
            reason = _describe(exc)
            if not "".join(shown).strip():
                log = logger.info if isinstance(exc, CircuitOpenError) else logger.warning
                log("rag.llm_fallback reason=%s", reason, extra={"reason": reason})
                degraded = (f"language model unavailable ({reason}) — extractive answer",)
                # Only whitespace was shown so far (``prefix``): the extractive answer follows it.
                async for event in self._extractive(
                    question, passages, degraded, context=context, prefix="".join(shown)
                ):
                    yield event
                return
            logger.warning("rag.llm_cut_off reason=%s", reason, exc_info=exc, extra={"reason": reason})
            shown.append(CUT_OFF_NOTE)
            yield TextDelta(CUT_OFF_NOTE)
            yield Generation(
                "".join(shown),
                tuple(citations.used),
                "llm",
                degraded=(f"language model failed mid-answer ({reason}) — the answer is incomplete",),
                cut_off=True,
                dropped_citations=tuple(citations.dropped),
            )
            return
        if citations.dropped:
            logger.warning("rag.citations_dropped numbers=%s", citations.dropped)
        yield Generation("".join(shown), tuple(citations.used), "llm", dropped_citations=tuple(citations.dropped))

    async def _extractive(
        self,
        question: str,
        passages: Sequence[Passage],
        degraded: tuple[str, ...],
        *,
        context: str = "",
        prefix: str = "",
    ) -> AsyncIterator[TextDelta | Generation]:
        text, cited = extractive_answer(question, passages, context=context)
        yield TextDelta(text)
        mode: Literal["extractive", "no_results"] = "extractive" if cited else "no_results"
        yield Generation(prefix + text, tuple(cited), mode, degraded=degraded)
