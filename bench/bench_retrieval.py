"""Embedded retrieval benchmark: index build time and query latency at ~1k and ~10k chunks, XQuAD top-5.

Run: ``.venv/bin/python bench/bench_retrieval.py [--rounds 3] [--sizes 1000,10000]`` (plain text output).

Corpus: the 240 XQuAD paragraphs (CC BY-SA 4.0; ``$XQUAD_DIR``, default ``../shared/eval-data/xquad-en``),
then synthetic paragraphs of ~120 words built from randomly drawn XQuAD sentences (seeded), so the
vocabulary and word frequencies stay those of real prose. Each paragraph is one ``.txt`` file, so one
chunk; the build is ``FtsIndex.sync_folder`` on a file index (read, hash, parse, chunk, one transaction).
Queries: the 1,190 XQuAD questions, each timed alone with ``perf_counter_ns``. Every figure is the median
over ``--rounds`` rounds (a fresh index per round). Concurrency: two threads sharing one file index, with
a connection per thread versus one connection behind a lock.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.index import FtsIndex  # noqa: E402 (the repository root is put on sys.path first)
from rag.ingest import Document, Section  # noqa: E402

DATA_DIR = Path(os.environ.get("XQUAD_DIR", str(ROOT / ".." / "shared" / "eval-data" / "xquad-en")))


def load_xquad() -> tuple[list[tuple[str, str]], list[tuple[str, list[str]]]]:
    """(title, paragraph) pairs and (question, answers) pairs from XQuAD."""
    data = json.loads((DATA_DIR / "xquad.en.json").read_text(encoding="utf-8"))["data"]
    paragraphs: list[tuple[str, str]] = []
    questions: list[tuple[str, list[str]]] = []
    for article in data:
        for paragraph in article["paragraphs"]:
            paragraphs.append((article["title"].replace("_", " "), paragraph["context"]))
            for qa in paragraph["qas"]:
                questions.append((qa["question"], [a["text"] for a in qa["answers"]]))
    return paragraphs, questions


def corpus(paragraphs: list[tuple[str, str]], size: int) -> list[tuple[str, str]]:
    """``size`` (title, text) pairs: the real paragraphs first, then seeded synthetic ones."""
    sentences = [s for _, text in paragraphs for s in re.split(r"(?<=[.!?])\s+", text) if s]
    titles = sorted({t for t, _ in paragraphs})
    rng = random.Random(42)
    out = list(paragraphs[:size])
    while len(out) < size:
        words: list[str] = []
        while len(words) < 120:
            words.extend(rng.choice(sentences).split())
        out.append((rng.choice(titles), " ".join(words)))
    return out


def write_folder(folder: Path, docs: list[tuple[str, str]]) -> None:
    """One ``.txt`` file per paragraph: first line the title, then the text."""
    for i, (title, text) in enumerate(docs):
        (folder / f"p{i:05d}.txt").write_text(f"{title}\n\n{text}\n", encoding="utf-8")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of ``values`` (q in 0-100)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def time_queries(index: FtsIndex, questions: list[str]) -> list[float]:
    """Latency in ms of each question, searched once, k=5."""
    out = []
    for q in questions:
        start = time.perf_counter_ns()
        index.search(q, k=5)
        out.append((time.perf_counter_ns() - start) / 1e6)
    return out


def concurrent_qps(path: Path, questions: list[str], *, per_thread: bool, threads: int = 2) -> float:
    """Queries per second with ``threads`` threads searching one index."""
    index = FtsIndex(path, per_thread_readers=per_thread)
    barrier = threading.Barrier(threads + 1)

    def work() -> None:
        barrier.wait()
        for q in questions:
            index.search(q, k=5)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    barrier.wait()
    start = time.perf_counter()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - start
    index.close()
    return threads * len(questions) / elapsed


def bench_size(paragraphs: list[tuple[str, str]], questions: list[str], size: int, rounds: int) -> dict[str, Any]:
    """Build, latency and concurrency figures for one corpus size (medians over rounds)."""
    docs = corpus(paragraphs, size)
    builds, p50s, p99s, qps_local, qps_lock, chunks = [], [], [], [], [], 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "kb"
        folder.mkdir()
        write_folder(folder, docs)
        for r in range(rounds):
            path = Path(tmp) / f"index{r}.sqlite"
            start = time.perf_counter()
            with FtsIndex(path) as index:
                index.sync_folder(folder)
                builds.append(time.perf_counter() - start)
                chunks = len(index)
                time_queries(index, questions[:100])  # warm the page cache and this thread's reader
                latencies = time_queries(index, questions)
            p50s.append(percentile(latencies, 50))
            p99s.append(percentile(latencies, 99))
            qps_local.append(concurrent_qps(path, questions, per_thread=True))
            qps_lock.append(concurrent_qps(path, questions, per_thread=False))
    return {
        "chunks": chunks,
        "build_s": statistics.median(builds),
        "p50_ms": statistics.median(p50s),
        "p99_ms": statistics.median(p99s),
        "qps_2threads_per_thread_conn": statistics.median(qps_local),
        "qps_2threads_locked_conn": statistics.median(qps_lock),
    }


def xquad_top5(articles_joined: bool) -> tuple[float, int]:
    """XQuAD top-5 answer rate (case-insensitive containment), per paragraph or per joined article."""
    data = json.loads((DATA_DIR / "xquad.en.json").read_text(encoding="utf-8"))["data"]
    index = FtsIndex()
    for article in data:
        title = article["title"].replace("_", " ")
        texts = [p["context"] for p in article["paragraphs"]]
        if articles_joined:
            texts = ["\n\n".join(texts)]
        for i, text in enumerate(texts):
            index.add_document(Document(f"{article['title']}/{i}", title, title, (Section((), text),), ""))
    hits = total = 0
    for article in data:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                found = [p.text.lower() for p in index.search(qa["question"], k=5)]
                hits += any(a["text"].lower() in t for a in qa["answers"] for t in found)
                total += 1
    return hits / total, len(index)


def main() -> None:
    """Print the retrieval benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", default="1000,10000")
    args = parser.parse_args()
    if not (DATA_DIR / "xquad.en.json").is_file():
        sys.exit(f"XQuAD data not found in {DATA_DIR} (set XQUAD_DIR)")
    paragraphs, qa = load_xquad()
    questions = [q for q, _ in qa]
    print(f"retrieval: SQLite FTS5 BM25, {len(questions)} XQuAD questions, k=5, median of {args.rounds} rounds")
    print(f"{'chunks':>8} {'build s':>8} {'p50 ms':>8} {'p99 ms':>8} {'qps 2thr/conn':>14} {'qps 2thr/lock':>14}")
    results: dict[str, Any] = {}
    for size in (int(s) for s in args.sizes.split(",")):
        row = bench_size(paragraphs, questions, size, args.rounds)
        results[str(size)] = row
        print(
            f"{row['chunks']:>8} {row['build_s']:>8.2f} {row['p50_ms']:>8.3f} {row['p99_ms']:>8.3f} "
            f"{row['qps_2threads_per_thread_conn']:>14.0f} {row['qps_2threads_locked_conn']:>14.0f}"
        )
    for joined in (False, True):
        rate, chunks = xquad_top5(joined)
        label = "one document per article (chunked)" if joined else "one document per paragraph"
        print(f"XQuAD top-5 answer rate, {label}: {rate:.2%} ({chunks} chunks)")
        results["xquad_top5_" + ("article" if joined else "paragraph")] = rate
    print("RESULT_JSON " + json.dumps({"retrieval": results}))


if __name__ == "__main__":
    main()
