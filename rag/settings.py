"""Settings of the RAG side, read once from the environment by :func:`load_settings`.

Every variable is optional; with none set the app answers from the in-process index over
``knowledge/`` with extractive answers.

========================  ==========================  ==================================================
Variable                  Default                     Meaning
========================  ==========================  ==================================================
``RAG_API_URL``           (unset)                     Base URL of a remote RAG service
                                                      (``python -m rag.server``), e.g.
                                                      ``http://127.0.0.1:8100``. Unset: in-process index
                                                      only. Set: remote first, local index as fallback.
``RAG_API_TOKEN``         (unset)                     Bearer token sent to (and, for ``rag.server``,
                                                      required by) the RAG service. Hidden from repr.
``RAG_TIMEOUT_S``         ``2``                       Connect/read/write/pool timeout of one call to
                                                      the RAG service, in seconds.
``RAG_TOP_K``             ``5``                       Passages retrieved per question (1..50).
``OPENAI_API_KEY``        (unset)                     Key of the OpenAI-compatible LLM. Hidden from repr.
``OPENAI_BASE_URL``       (unset: OpenAI's own)       Base URL of any OpenAI-compatible server (vLLM,
                                                      Ollama, LiteLLM...). Setting either this or the key
                                                      turns generation on; with neither, answers are
                                                      extractive (quoted sentences with citations).
``LLM_MODEL``             ``gpt-4o-mini``             Chat model name.
``LLM_TIMEOUT_S``         ``10``                      Connect/read/write/pool timeout of the LLM's
                                                      HTTP calls (a read covers the wait per chunk).
``LLM_DEADLINE_S``        ``30``                      Hard deadline of one whole streamed answer; past
                                                      it the answer ends (cut off, or extractive if
                                                      nothing was streamed yet).
``KNOWLEDGE_DIR``         ``knowledge``               Folder ingested into the in-process index.
``INDEX_PATH``            ``data/index.sqlite3``      SQLite file of the in-process index (``data/`` is
                                                      git-ignored; the file is rebuilt when missing).
``EMBEDDINGS_MODEL``      (unset: off)                Embeddings model of an OpenAI-compatible
                                                      ``/v1/embeddings`` endpoint. Set: chunk vectors are
                                                      stored in the index and fused with BM25 (RRF);
                                                      when the endpoint fails, BM25 alone (degraded).
``EMBEDDINGS_BASE_URL``   ``OPENAI_BASE_URL``         Base URL of the embeddings server (the default
                                                      applies only when ``EMBEDDINGS_MODEL`` is set).
``EMBEDDINGS_API_KEY``    ``OPENAI_API_KEY``          Key of the embeddings server. Hidden from repr.
``EMBEDDINGS_TIMEOUT_S``  ``2``                       Connect/read/write/pool timeout of one embeddings
                                                      call, in seconds.
========================  ==========================  ==================================================

Relative paths are relative to the current directory. Empty values count as unset. An invalid value
raises :class:`SettingsError`, whose message names the variable and quotes the value.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

__all__ = [
    "DEFAULT_EMBEDDINGS_TIMEOUT_S",
    "DEFAULT_INDEX_PATH",
    "DEFAULT_KNOWLEDGE_DIR",
    "DEFAULT_LLM_DEADLINE_S",
    "DEFAULT_LLM_MODEL",
    "DEFAULT_LLM_TIMEOUT_S",
    "DEFAULT_RAG_TIMEOUT_S",
    "DEFAULT_RAG_TOP_K",
    "MAX_QUERY_CHARS",
    "MAX_TOP_K",
    "Settings",
    "SettingsError",
    "load_settings",
]

DEFAULT_LLM_MODEL = "gpt-4o-mini"
DEFAULT_LLM_TIMEOUT_S = 10.0
DEFAULT_LLM_DEADLINE_S = 30.0
DEFAULT_RAG_TIMEOUT_S = 2.0
DEFAULT_RAG_TOP_K = 5
DEFAULT_EMBEDDINGS_TIMEOUT_S = 2.0
MAX_TOP_K = 50
MAX_QUERY_CHARS = 2000
"""Longest retrieval query the RAG service accepts (after stripping)."""
DEFAULT_KNOWLEDGE_DIR = Path("knowledge")
DEFAULT_INDEX_PATH = Path("data/index.sqlite3")


class SettingsError(ValueError):
    """An environment variable has an invalid value; the message names it and quotes the value."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Settings:
    """Validated settings (see the module docstring for each variable)."""

    rag_api_url: str | None = None
    rag_api_token: str | None = field(default=None, repr=False)
    rag_timeout_s: float = DEFAULT_RAG_TIMEOUT_S
    rag_top_k: int = DEFAULT_RAG_TOP_K
    openai_api_key: str | None = field(default=None, repr=False)
    openai_base_url: str | None = None
    llm_model: str = DEFAULT_LLM_MODEL
    llm_timeout_s: float = DEFAULT_LLM_TIMEOUT_S
    llm_deadline_s: float = DEFAULT_LLM_DEADLINE_S
    knowledge_dir: Path = DEFAULT_KNOWLEDGE_DIR
    index_path: Path = DEFAULT_INDEX_PATH
    embeddings_model: str | None = None
    embeddings_base_url: str | None = None
    embeddings_api_key: str | None = field(default=None, repr=False)
    embeddings_timeout_s: float = DEFAULT_EMBEDDINGS_TIMEOUT_S

    @property
    def llm_enabled(self) -> bool:
        """True when an LLM is configured (a key, or a base URL of a server that may need none)."""
        return bool(self.openai_api_key or self.openai_base_url)


CHAINLIT_CI_FAKE_KEY = "sk-FAKE-OPENAI-API-KEY"


def _get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None or not value.strip():
        return None
    return value.strip()


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = _get(env, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (0 < value < math.inf):
        raise SettingsError(f"{name}: expected a positive number of seconds, got {raw!r}")
    return value


def _int_between(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = _get(env, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}: expected an integer from {low} to {high}, got {raw!r}") from None
    if not low <= value <= high:
        raise SettingsError(f"{name}: expected an integer from {low} to {high}, got {raw!r}")
    return value


def _url(env: Mapping[str, str], name: str) -> str | None:
    raw = _get(env, name)
    if raw is None:
        return None
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SettingsError(f"{name}: expected an http(s) URL such as 'http://127.0.0.1:8100', got {raw!r}")
    return raw.rstrip("/")


def load_settings(environ: Mapping[str, str] = os.environ) -> Settings:
    """Read and validate every RAG-side variable from ``environ``.

    Raises:
        SettingsError: a value is invalid (the message names the variable and quotes the value).
    """
    rag_timeout_s = _seconds(environ, "RAG_TIMEOUT_S", DEFAULT_RAG_TIMEOUT_S)
    llm_timeout_s = _seconds(environ, "LLM_TIMEOUT_S", DEFAULT_LLM_TIMEOUT_S)
    llm_deadline_s = _seconds(environ, "LLM_DEADLINE_S", DEFAULT_LLM_DEADLINE_S)
    embeddings_timeout_s = _seconds(environ, "EMBEDDINGS_TIMEOUT_S", DEFAULT_EMBEDDINGS_TIMEOUT_S)
    embeddings_model = _get(environ, "EMBEDDINGS_MODEL")
    openai_base_url = _url(environ, "OPENAI_BASE_URL")
    openai_api_key = _get(environ, "OPENAI_API_KEY")
    if openai_api_key == CHAINLIT_CI_FAKE_KEY:
        # `chainlit run` with CI set plants this placeholder; it is not a configured LLM.
        openai_api_key = None
    return Settings(
        rag_api_url=_url(environ, "RAG_API_URL"),
        rag_api_token=_get(environ, "RAG_API_TOKEN"),
        rag_timeout_s=rag_timeout_s,
        rag_top_k=_int_between(environ, "RAG_TOP_K", DEFAULT_RAG_TOP_K, 1, MAX_TOP_K),
        openai_api_key=openai_api_key,
        openai_base_url=openai_base_url,
        llm_model=_get(environ, "LLM_MODEL") or DEFAULT_LLM_MODEL,
        llm_timeout_s=llm_timeout_s,
        llm_deadline_s=llm_deadline_s,
        knowledge_dir=Path(_get(environ, "KNOWLEDGE_DIR") or DEFAULT_KNOWLEDGE_DIR),
        index_path=Path(_get(environ, "INDEX_PATH") or DEFAULT_INDEX_PATH),
        embeddings_model=embeddings_model,
        # The OPENAI_* fallbacks only apply when embeddings are on: off, these fields stay unset.
        embeddings_base_url=(_url(environ, "EMBEDDINGS_BASE_URL") or openai_base_url) if embeddings_model else None,
        embeddings_api_key=(_get(environ, "EMBEDDINGS_API_KEY") or openai_api_key) if embeddings_model else None,
        embeddings_timeout_s=embeddings_timeout_s,
    )
