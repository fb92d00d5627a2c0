"""Text embeddings from an OpenAI-compatible ``/v1/embeddings`` endpoint, for hybrid retrieval (optional).

Off unless ``EMBEDDINGS_MODEL`` is set (see :mod:`rag.settings`). The one remote call,
:func:`_create_embeddings`, goes through :data:`embeddings_breaker`; the index catches its failures
and answers with BM25 alone (see :meth:`rag.index.FtsIndex.search_detailed`).

Vectors are returned as unit-length float32 ``array('f')``: cosine is then a dot product, and the
index stores them as BLOBs with ``array.tobytes()`` (no numpy).
"""

from __future__ import annotations

import logging
from array import array
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from resilience import CircuitBreakerProxy

from .fusion import normalize
from .settings import Settings

if TYPE_CHECKING:
    from openai import OpenAI

__all__ = [
    "Embedder",
    "EmbeddingError",
    "OpenAIEmbedder",
    "build_embedder",
    "embeddings_breaker",
]

logger = logging.getLogger(__name__)

embeddings_breaker = CircuitBreakerProxy("embeddings")
"""Calls to the OpenAI-compatible embeddings endpoint."""

DEFAULT_BATCH_SIZE = 64


class EmbeddingError(RuntimeError):
    """The embeddings endpoint answered with something unusable (wrong count, wrong or mixed dimensions)."""


class Embedder(Protocol):
    """Turns texts into unit-length vectors, one per text, in order."""

    @property
    def model(self) -> str:
        """The model name; stored with each vector, so a model change re-embeds everything."""
        ...

    def embed(self, texts: Sequence[str]) -> list[array[float]]:
        """One unit-length float32 vector per text; raises on any failure (the caller falls back)."""
        ...


@embeddings_breaker
def _create_embeddings(client: OpenAI, model: str, texts: list[str]) -> list[list[float]]:
    """One ``POST /embeddings`` call: the raw vectors, in input order."""
    response = client.embeddings.create(model=model, input=texts, encoding_format="float")
    data = sorted(response.data, key=lambda item: item.index)
    return [item.embedding for item in data]


class OpenAIEmbedder:
    """An :class:`Embedder` backed by the ``openai`` SDK (any OpenAI-compatible server).

    Args:
        client: a sync ``openai.OpenAI`` client (``max_retries=0`` and explicit timeouts: see
            :func:`build_embedder`).
        model: the embeddings model name.
        dimensions: the expected vector size, or None to accept the first one seen (and then insist on it).
        batch_size: texts per request.
    """

    def __init__(
        self, client: OpenAI, model: str, *, dimensions: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
        self.client = client
        self._model = model
        self.dimensions = dimensions
        self.batch_size = batch_size

    @property
    def model(self) -> str:
        """The model name."""
        return self._model

    def embed(self, texts: Sequence[str]) -> list[array[float]]:
        """Unit vectors for ``texts``, ``batch_size`` texts per request.

        Raises:
            EmbeddingError: a response holds the wrong number of vectors, or a vector of another size.
            CircuitOpenError: the embeddings breaker is open.
            openai.OpenAIError: the request failed (connection, timeout, HTTP error).
        """
        out: list[array[float]] = []
        for start in range(0, len(texts), self.batch_size):
            # An empty string is rejected by OpenAI's API; a single space embeds as "nothing".
            batch = [t if t.strip() else " " for t in texts[start : start + self.batch_size]]
            vectors = _create_embeddings(self.client, self._model, batch)
            if len(vectors) != len(batch):
                raise EmbeddingError(f"{self._model}: asked for {len(batch)} embeddings, got {len(vectors)}")
            for vector in vectors:
                if self.dimensions is None:
                    self.dimensions = len(vector)
                if len(vector) != self.dimensions or not vector:
                    raise EmbeddingError(
                        f"{self._model}: got a vector of {len(vector)} dimensions, expected {self.dimensions}"
                    )
                out.append(normalize(vector))
        return out

    def close(self) -> None:
        """Close the HTTP client."""
        self.client.close()

    def __repr__(self) -> str:
        return f"<OpenAIEmbedder model={self._model!r} dimensions={self.dimensions}>"


def build_embedder(settings: Settings) -> OpenAIEmbedder | None:
    """The embedder that ``settings`` configure (no retries, explicit timeouts), or None when off."""
    if not settings.embeddings_model:
        return None
    from openai import OpenAI, Timeout

    t = settings.embeddings_timeout_s
    client = OpenAI(
        api_key=settings.embeddings_api_key or "unused",  # a local server may need no key; the SDK wants one
        base_url=settings.embeddings_base_url or "https://api.openai.com/v1",
        max_retries=0,  # a failed call falls back to BM25 at once; retries would only add latency
        timeout=Timeout(connect=min(t, 5.0), read=t, write=t, pool=t),
    )
    return OpenAIEmbedder(client, settings.embeddings_model)
