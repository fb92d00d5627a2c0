"""Async HTTP client of the RAG service (``python -m rag.server``), protected by ``rag_api_breaker``.

Errors::

    RagError                base of this module's errors
    ├── RagServiceError     the service failed: unreachable, timed out, 5xx, 401/403/404/429, or a body
    │                       that is not the expected JSON. Counts as a breaker failure.
    └── RagRequestError     the service rejected *our* request (400/413/422: bad query or k). Does NOT
                            count: the service is healthy, and one odd question must not switch every
                            user to the fallback.

Only the HTTP exchange runs inside the breaker. It returns 400/413/422 responses instead of raising, and
:meth:`RagClient.search` raises :class:`RagRequestError` outside the breaker; so the exclusion holds
whatever the breaker configuration says (no ``exclude=`` entry to forget). 401/403 count as failures: a
wrong token is a misconfiguration that makes every call fail, and tripping sends users to the local
index quickly.
"""

from __future__ import annotations

from typing import Any

import httpx

from resilience import rag_api_breaker

from .settings import DEFAULT_RAG_TIMEOUT_S
from .types import Passage

__all__ = ["RagClient", "RagError", "RagRequestError", "RagServiceError"]

RETRIEVE_PATH = "/v1/retrieve"
# Statuses caused by the request itself (validation): the service is fine, our input is not.
_CLIENT_FAULT_STATUSES = frozenset({400, 413, 422})


class RagError(Exception):
    """Base class of the RAG client's errors."""


class RagServiceError(RagError):
    """The RAG service failed or answered something unusable (counts as a breaker failure).

    Args:
        message: what went wrong, naming the URL.
        reason: a short phrase for users and metrics: ``"unreachable"``, ``"timed out"``, ``"HTTP 503"``,
            ``"malformed response"``.
        status_code: the HTTP status when there was a response.
    """

    def __init__(self, message: str, *, reason: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.status_code = status_code


class RagRequestError(RagError):
    """The RAG service rejected the request as invalid (does not count as a breaker failure)."""

    def __init__(self, message: str, *, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message", body["error"]))
    return str(body)[:200]


class RagClient:
    """Retrieval over HTTP through one pooled ``httpx.AsyncClient``.

    Args:
        base_url: the service's root URL (``http://host:port``).
        token: bearer token, when the service requires one.
        timeout_s: connect, read, write and pool-acquire timeout of each call.
        transport: an httpx transport (tests); default: a pooled TCP transport.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout_s: float = DEFAULT_RAG_TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(connect=timeout_s, read=timeout_s, write=timeout_s, pool=timeout_s),
            limits=httpx.Limits(max_connections=20, max_keepalive_connections=10, keepalive_expiry=30.0),
            transport=transport,
            trust_env=False,  # the service is configured explicitly; proxy env vars must not reroute it
        )

    def __repr__(self) -> str:
        return f"RagClient({self.base_url!r})"

    async def search(self, query: str, k: int = 5) -> list[Passage]:
        """The ``k`` best passages for ``query`` from the service, best first.

        Raises:
            CircuitOpenError: the ``rag_api`` breaker is open (nothing was sent).
            RagServiceError: the service failed (counted by the breaker).
            RagRequestError: the service rejected the query or ``k`` (not counted).
        """
        result = await self._exchange({"query": query, "k": k})
        if isinstance(result, RagRequestError):
            raise result
        return result

    @rag_api_breaker
    async def _exchange(self, payload: dict[str, Any]) -> list[Passage] | RagRequestError:
        """One POST under the breaker: raise on service faults, return (not raise) a client fault."""
        url = f"{self.base_url}{RETRIEVE_PATH}"
        try:
            response = await self._http.post(RETRIEVE_PATH, json=payload)
        except httpx.TimeoutException as exc:
            raise RagServiceError(f"RAG service at {url} timed out ({type(exc).__name__})", reason="timed out") from exc
        except httpx.HTTPError as exc:
            raise RagServiceError(
                f"RAG service at {url} is unreachable ({type(exc).__name__}: {exc})", reason="unreachable"
            ) from exc
        status = response.status_code
        if status in _CLIENT_FAULT_STATUSES:
            return RagRequestError(
                f"RAG service rejected the request ({status}): {_error_message(response)}", status_code=status
            )
        if not 200 <= status < 300:
            raise RagServiceError(
                f"RAG service at {url} answered {status}: {_error_message(response)}",
                reason=f"HTTP {status}",
                status_code=status,
            )
        try:
            body = response.json()
            items = body["passages"]
            if not isinstance(items, list):
                raise TypeError(f"'passages' is a {type(items).__name__}, not a list")
            return [Passage.from_dict(item) for item in items]
        except (ValueError, KeyError, TypeError) as exc:
            raise RagServiceError(
                f"RAG service at {url} sent a malformed body ({type(exc).__name__}: {exc})",
                reason="malformed response",
                status_code=status,
            ) from exc

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()
