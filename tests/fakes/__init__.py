"""Test doubles at the edges: a real in-memory retriever, and servers run in a background thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import uvicorn

from rag.generate import content_stems
from rag.types import Passage

__all__ = ["ListRetriever", "ServerThread", "closed_port", "passage", "silent_server"]


def passage(n: int, text: str, *, title: str = "", heading: str = "") -> Passage:
    """A passage of document ``doc{n}.md`` with ``text``."""
    return Passage(
        doc_id=f"doc{n}.md",
        chunk_id=f"doc{n}.md#0",
        title=title or f"Document {n}",
        heading=heading,
        text=text,
        score=1.0 / n,
        source=f"doc{n}.md",
    )


class ListRetriever:
    """A real :class:`~rag.types.Retriever` over a list: passages sharing a word with the query, best first.

    Args:
        passages: the corpus.
        match_all: return every passage whatever the query (to test relevance filtering downstream).
    """

    def __init__(self, passages: Sequence[Passage], *, match_all: bool = False) -> None:
        self.passages = list(passages)
        self.match_all = match_all
        self.queries: list[str] = []

    def __len__(self) -> int:
        return len(self.passages)

    def search(self, query: str, k: int = 5) -> list[Passage]:
        """Passages ranked by shared content words with ``query``."""
        self.queries.append(query)
        if self.match_all:
            return self.passages[:k]
        wanted = set(content_stems(query))
        scored = [(len(wanted & set(content_stems(f"{p.title} {p.text}"))), i, p) for i, p in enumerate(self.passages)]
        return [p for hits, _, p in sorted(scored, key=lambda t: (-t[0], t[1])) if hits > 0][:k]


class ServerThread:
    """An ASGI app served by uvicorn on a free loopback port, in a daemon thread.

    Args:
        app: the ASGI application.
    """

    def __init__(self, app: Any) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    def start(self) -> ServerThread:
        """Start serving; returns once the server accepts connections."""
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        """Stop serving and wait for the thread."""
        self.server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def closed_port() -> int:
    """A loopback port nothing listens on (connecting is refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@contextmanager
def silent_server() -> Iterator[str]:
    """A base URL whose TCP connections are accepted by the kernel but never answered (a hung server)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
