"""Plain data shared by ingestion, retrieval, the HTTP service and generation."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Passage:
    """One retrieved chunk, with what a citation needs.

    Args:
        doc_id: stable id of the source document (its path relative to the knowledge folder).
        chunk_id: stable id of the chunk within the index (``doc_id#n``).
        title: the document's title.
        heading: the heading path of the chunk (``"Setup > Redis"``), may be empty.
        text: the chunk's full text.
        score: relevance, higher is better (comparable only within one result list).
        source: what to show as the citation's origin (file name or URL).
        snippet: a short excerpt around the matched words, for display.
    """

    doc_id: str
    chunk_id: str
    title: str
    heading: str
    text: str
    score: float
    source: str
    snippet: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (the RAG service's wire format)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Passage:
        """Inverse of :meth:`to_dict`; raises ``KeyError``/``TypeError`` on malformed data."""
        return cls(
            doc_id=str(data["doc_id"]),
            chunk_id=str(data["chunk_id"]),
            title=str(data["title"]),
            heading=str(data.get("heading", "")),
            text=str(data["text"]),
            score=float(data["score"]),
            source=str(data["source"]),
            snippet=str(data.get("snippet", "")),
        )


class Retriever(Protocol):
    """Anything that returns the best passages for a query (the embedded index, the HTTP client)."""

    def search(self, query: str, k: int = 5) -> list[Passage]:
        """The ``k`` best passages for ``query``, best first; an empty list when nothing matches."""
        ...
