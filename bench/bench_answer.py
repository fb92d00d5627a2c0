"""Answer latency on the embedded defaults: local FTS5 index over knowledge/, extractive answers.

Times the whole ``Assistant.answer`` stream (retrieval + extractive generation + citations) for a
set of questions about the shipped user guide, with the breaker registry bound (in-memory store),
as the app does. Prints p50/p99 over all rounds and a ``RESULT_JSON`` line. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rag.pipeline import AnswerDone, Assistant, build_local_retriever  # noqa: E402
from rag.settings import load_settings  # noqa: E402
from resilience import init_registry, shutdown_registry  # noqa: E402

QUESTIONS = [
    "How do I run the app?",
    "How do I run several instances with Redis?",
    "What happens when the RAG service is down?",
    "What does the half-open state do?",
    "How do I change the failure threshold of the LLM breaker?",
    "Which file formats can I put in the knowledge folder?",
    "Why does the app answer without a language model?",
    "How do I run the tests?",
]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(rounds: int) -> dict[str, float]:
    """Answer every question ``rounds`` times; return latency figures in milliseconds."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(
            {"INDEX_PATH": str(Path(tmp) / "index.sqlite3"), "KNOWLEDGE_DIR": str(ROOT / "knowledge")}
        )
        local = build_local_retriever(settings)
        await init_registry(environ={})
        assistant = Assistant.from_settings(settings, local=local)
        samples: list[float] = []
        cited = 0
        try:
            for question in QUESTIONS:  # warm-up
                async for _ in assistant.answer(question, ()):
                    pass
            for _ in range(rounds):
                for question in QUESTIONS:
                    start = time.perf_counter()
                    done: AnswerDone | None = None
                    async for event in assistant.answer(question, ()):
                        if isinstance(event, AnswerDone):
                            done = event
                    samples.append((time.perf_counter() - start) * 1000.0)
                    cited += bool(done and done.citations)
        finally:
            await assistant.aclose()
            await shutdown_registry()
    return {
        "answers": len(samples),
        "with_citations": cited,
        "p50_ms": statistics.median(samples),
        "p99_ms": _percentile(samples, 0.99),
    }


def main() -> None:
    """Print answer latency on the embedded defaults."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=25)
    args = parser.parse_args()
    result = asyncio.run(run(args.rounds))
    print("answer latency, embedded defaults (local FTS5 index over knowledge/, extractive, in-memory breakers)")
    print(f"  answers: {result['answers']} ({result['with_citations']} with citations)")
    print(f"  p50 {result['p50_ms']:.2f} ms   p99 {result['p99_ms']:.2f} ms")
    print("RESULT_JSON " + json.dumps({"answer": result}))


if __name__ == "__main__":
    main()
