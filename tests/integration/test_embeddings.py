"""Optional embeddings fused with BM25: off by default, stored beside the chunks, BM25 when they fail."""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from rag.embeddings import EmbeddingError, OpenAIEmbedder, build_embedder, embeddings_breaker
from rag.fusion import normalize, rrf, top_by_cosine
from rag.generate import Generator
from rag.index import FtsIndex
from rag.pipeline import AnswerDone, Assistant, build_local_retriever
from rag.settings import Settings, load_settings
from resilience import init_registry_sync
from resilience.testing import FakeClock
from tests.fakes.openai_server import FakeOpenAI, Fault

DOCS = {
    "redis.md": "# Redis\n\nBreaker state is shared through Redis so every worker sees the same circuit.\n",
    "timeouts.md": "# Timeouts\n\nEach remote call has an explicit timeout; the LLM read timeout is ten seconds.\n",
    "deploy.md": "# Deploy\n\nRun the app behind a reverse proxy and keep the index file on a persistent volume.\n",
}


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAI]:
    """One fake OpenAI-compatible server for the module."""
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def emb(server: FakeOpenAI) -> FakeOpenAI:
    """The fake server, reset for each test."""
    server.reset()
    return server


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A small knowledge folder."""
    root = tmp_path / "kb"
    root.mkdir()
    for name, text in DOCS.items():
        (root / name).write_text(text, encoding="utf-8")
    return root


def embedder_for(server: FakeOpenAI, **options: int) -> OpenAIEmbedder:
    """An embedder that talks to the fake server through the openai SDK."""
    settings = Settings(embeddings_model="fake-embed", embeddings_base_url=server.base_url, embeddings_timeout_s=2)
    embedder = build_embedder(settings)
    assert embedder is not None
    for key, value in options.items():
        setattr(embedder, key, value)
    return embedder


def stored_vectors(index: FtsIndex) -> int:
    """Rows in the side table of vectors."""
    count: int = index._writer.execute("SELECT count(*) FROM chunk_vectors").fetchone()[0]
    return count


def embedded_inputs(server: FakeOpenAI) -> list[str]:
    """Every text the server was asked to embed, in order."""
    return [text for body in server.requests for text in body["input"]]


class SynonymEmbedder:
    """A deterministic :class:`~rag.embeddings.Embedder` where "automobile" and "car" share a dimension."""

    model = "synonyms"
    concepts = (("car", "automobile", "vehicle"), ("redis",), ("timeout", "timeouts"), ("proxy",))

    def embed(self, texts: Sequence[str]) -> list[array[float]]:
        """One concept-count vector per text."""
        out = []
        for text in texts:
            words = text.lower().replace(".", " ").split()
            out.append(normalize([float(sum(w in c for w in words)) + 1e-3 for c in self.concepts]))
        return out


# ------------------------------------------------------------------------------ settings and off by default


def test_off_by_default(folder: Path, tmp_path: Path) -> None:
    """With no EMBEDDINGS_MODEL there is no embedder, no vector and plain BM25 results."""
    settings = load_settings({})
    assert settings.embeddings_model is None and build_embedder(settings) is None
    index = build_local_retriever(settings, knowledge_dir=folder, index_path=tmp_path / "i.sqlite3")
    assert isinstance(index, FtsIndex) and index.embedder is None
    assert stored_vectors(index) == 0
    result = index.search_detailed("redis breaker state")
    assert result.degraded is None and result.passages[0].doc_id == "redis.md"
    index.close()


def test_settings_default_to_the_openai_ones() -> None:
    """EMBEDDINGS_BASE_URL and EMBEDDINGS_API_KEY fall back to OPENAI_BASE_URL and OPENAI_API_KEY."""
    env = {"EMBEDDINGS_MODEL": "m", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "OPENAI_API_KEY": "sk-x"}
    settings = load_settings(env)
    assert (settings.embeddings_base_url, settings.embeddings_api_key) == ("http://127.0.0.1:9/v1", "sk-x")
    own = load_settings({**env, "EMBEDDINGS_BASE_URL": "http://10.0.0.1/v1", "EMBEDDINGS_API_KEY": "k2"})
    assert (own.embeddings_base_url, own.embeddings_api_key) == ("http://10.0.0.1/v1", "k2")
    assert "k2" not in repr(own) and own.embeddings_timeout_s == 2.0
    off = load_settings({k: v for k, v in env.items() if k != "EMBEDDINGS_MODEL"})
    assert (off.embeddings_model, off.embeddings_base_url, off.embeddings_api_key) == (None, None, None)


# ------------------------------------------------------------------------------ fusion


def test_rrf_rewards_agreement_and_is_deterministic() -> None:
    """An item ranked by both lists beats one ranked first by only one; ties keep first-seen order."""
    fused = rrf([["a", "b", "c"], ["c", "a"]], k=60)
    assert [item for item, _ in fused] == ["a", "c", "b"]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 62)
    assert [item for item, _ in rrf([["x"], ["y"]])] == ["x", "y"]
    with pytest.raises(ValueError, match="k: expected"):
        rrf([["a"]], k=-1)


def test_top_by_cosine_orders_by_similarity() -> None:
    """Nearest unit vectors come first."""
    vectors = [("far", normalize([0.0, 1.0])), ("near", normalize([1.0, 0.1])), ("mid", normalize([1.0, 1.0]))]
    assert top_by_cosine(normalize([1.0, 0.0]), vectors, 2) == ["near", "mid"]


def test_vector_only_match_is_fused_in(folder: Path) -> None:
    """A chunk BM25 cannot match ("automobile" vs "car") is found through its vector, with a snippet."""
    (folder / "cars.md").write_text("# Cars\n\nA car needs a proxy for parking timeouts.\n", encoding="utf-8")
    index = FtsIndex(embedder=SynonymEmbedder())
    index.sync_folder(folder)
    assert stored_vectors(index) == len(index)
    assert index.search("automobile redis", k=5)[0].doc_id == "redis.md"
    result = index.search_detailed("automobile redis", k=5)
    ids = [p.doc_id for p in result.passages]
    assert result.degraded is None and "cars.md" in ids and ids[0] == "redis.md"
    car = next(p for p in result.passages if p.doc_id == "cars.md")
    assert car.snippet.startswith("A car") and car.score <= 2 / 61
    index.close()


# ------------------------------------------------------------------------------ storage and incremental sync


def test_vectors_persisted_and_resynced_incrementally(emb: FakeOpenAI, folder: Path, tmp_path: Path) -> None:
    """Sync embeds only new or changed chunks, keeps vectors on disk, and drops them with their chunks."""
    path = tmp_path / "index.sqlite3"
    index = FtsIndex(path, embedder=embedder_for(emb))
    index.sync_folder(folder)
    assert stored_vectors(index) == len(index) == 3
    index.close()

    emb.reset()
    reopened = FtsIndex(path, embedder=embedder_for(emb))
    reopened.sync_folder(folder)
    assert emb.requests == []  # nothing changed: no embedding call at all
    (folder / "timeouts.md").write_text("# Timeouts\n\nThe RAG call times out after two seconds.\n", encoding="utf-8")
    (folder / "deploy.md").unlink()
    report = reopened.sync_folder(folder)
    assert report.updated == ["timeouts.md"] and report.removed == ["deploy.md"]
    inputs = embedded_inputs(emb)
    assert len(inputs) == 1 and "two seconds" in inputs[0]
    assert stored_vectors(reopened) == len(reopened) == 2
    result = reopened.search_detailed("how many seconds before the RAG call times out")
    assert result.degraded is None and result.passages[0].doc_id == "timeouts.md"
    reopened.close()


# ------------------------------------------------------------------------------ failures


def test_server_down_falls_back_to_bm25_and_counts(emb: FakeOpenAI, folder: Path, clock: FakeClock) -> None:
    """Embeddings failing: chunks still indexed, searches answer with BM25 (degraded), the breaker counts."""
    init_registry_sync(environ={}, clock=clock)
    emb.fault = Fault(status=500)
    index = FtsIndex(embedder=embedder_for(emb))
    index.sync_folder(folder)  # the failing embedding call does not fail the sync
    assert len(index) == 3 and stored_vectors(index) == 0
    result = index.search_detailed("redis breaker state")
    assert result.passages and result.passages[0].doc_id == "redis.md"
    assert result.degraded is not None and "embeddings unavailable (InternalServerError)" in result.degraded
    for _ in range(5):
        index.search_detailed("redis breaker state")
    assert embeddings_breaker.breaker is not None and embeddings_breaker.breaker.metrics()["failures"] >= 5
    seen = len(emb.requests)
    open_result = index.search_detailed("redis")
    assert len(emb.requests) == seen and open_result.degraded is not None and "circuit open" in open_result.degraded
    assert open_result.passages[0].doc_id == "redis.md"

    emb.fault = None
    clock.advance(120)  # past the open period: the next call probes and succeeds
    assert index.embed_missing() == 3 and stored_vectors(index) == 3
    assert index.search_detailed("redis breaker state").degraded is None
    index.close()


def test_hung_server_times_out_to_bm25(emb: FakeOpenAI, folder: Path) -> None:
    """A server that never answers costs one timeout, then BM25 results come back."""
    index = FtsIndex(embedder=SynonymEmbedder())
    index.sync_folder(folder)
    settings = Settings(embeddings_model="fake", embeddings_base_url=emb.base_url, embeddings_timeout_s=0.3)
    index.embedder = build_embedder(settings)
    emb.fault = Fault(hang=True)
    result = index.search_detailed("proxy volume")
    assert result.passages[0].doc_id == "deploy.md" and result.degraded is not None
    index.close()


def test_dimension_mismatch_is_reported_then_healed(emb: FakeOpenAI, folder: Path) -> None:
    """Vectors of another size: search says so and uses BM25; the next sync re-embeds every chunk."""
    index = FtsIndex(embedder=embedder_for(emb))
    index.sync_folder(folder)
    emb.embedding_dim = 32
    index.embedder = embedder_for(emb)  # same model name, the server now returns 32 numbers
    result = index.search_detailed("redis breaker")
    assert result.passages[0].doc_id == "redis.md"
    assert result.degraded is not None and "another size in the index (64, the query has 32" in result.degraded
    (folder / "new.md").write_text("# New\n\nA new page about workers.\n", encoding="utf-8")
    index.sync_folder(folder)
    assert stored_vectors(index) == len(index) == 4
    assert {r[0] for r in index._writer.execute("SELECT DISTINCT dim FROM chunk_vectors")} == {32}
    assert index.search_detailed("redis breaker").degraded is None
    index.close()


def test_embedder_rejects_an_unexpected_size(emb: FakeOpenAI) -> None:
    """An embedder told to expect 64 dimensions raises a clear error on a 32-number vector."""
    emb.embedding_dim = 32
    with pytest.raises(EmbeddingError, match="got a vector of 32 dimensions, expected 64"):
        embedder_for(emb, dimensions=64).embed(["hello"])


async def test_pipeline_marks_the_answer_degraded(emb: FakeOpenAI, folder: Path) -> None:
    """The assistant answers from BM25 when embeddings fail and says why in AnswerDone.degraded."""
    index = FtsIndex(embedder=embedder_for(emb))
    index.sync_folder(folder)
    emb.fault = Fault(status=503)
    assistant = Assistant(local=index, generator=Generator(None, model="unused", deadline_s=5))
    events = [event async for event in assistant.answer("How is breaker state shared with Redis?")]
    done = events[-1]
    assert isinstance(done, AnswerDone) and done.mode == "extractive" and done.citations
    assert any("embeddings unavailable" in reason for reason in done.degraded)
    index.close()
