"""load_settings: defaults, parsing, validation messages, hidden secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.settings import DEFAULT_INDEX_PATH, Settings, SettingsError, load_settings


def test_defaults_with_empty_environment() -> None:
    """With nothing set: local index over knowledge/, no remote service, no LLM."""
    settings = load_settings({})
    assert settings == Settings()
    assert settings.rag_api_url is None and not settings.llm_enabled
    assert settings.knowledge_dir == Path("knowledge") and settings.index_path == DEFAULT_INDEX_PATH
    assert settings.index_path.parts[0] == "data"  # git-ignored


def test_every_variable_is_read() -> None:
    """Each documented variable lands in its field, converted to its type."""
    env = {
        "RAG_API_URL": "http://127.0.0.1:8100/",
        "RAG_API_TOKEN": "tok",
        "RAG_TIMEOUT_S": "0.5",
        "RAG_TOP_K": "8",
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": "http://127.0.0.1:11434/v1",
        "LLM_MODEL": "llama3",
        "LLM_TIMEOUT_S": "3",
        "LLM_DEADLINE_S": "12.5",
        "KNOWLEDGE_DIR": "docs",
        "INDEX_PATH": "/tmp/x.db",
    }
    settings = load_settings(env)
    assert settings == Settings(
        rag_api_url="http://127.0.0.1:8100",
        rag_api_token="tok",
        rag_timeout_s=0.5,
        rag_top_k=8,
        openai_api_key="sk-test",
        openai_base_url="http://127.0.0.1:11434/v1",
        llm_model="llama3",
        llm_timeout_s=3.0,
        llm_deadline_s=12.5,
        knowledge_dir=Path("docs"),
        index_path=Path("/tmp/x.db"),
    )
    assert settings.llm_enabled


def test_empty_values_count_as_unset() -> None:
    """Blank variables fall back to the defaults instead of failing."""
    assert load_settings({"RAG_API_URL": " ", "LLM_MODEL": "", "RAG_TOP_K": ""}) == Settings()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LLM_TIMEOUT_S", "abc"),
        ("LLM_DEADLINE_S", "-1"),
        ("RAG_TIMEOUT_S", "0"),
        ("RAG_TIMEOUT_S", "inf"),
        ("RAG_TOP_K", "0"),
        ("RAG_TOP_K", "51"),
        ("RAG_TOP_K", "2.5"),
        ("RAG_API_URL", "localhost:8100"),
        ("OPENAI_BASE_URL", "ftp://example.com"),
    ],
)
def test_invalid_value_names_variable_and_quotes_value(name: str, value: str) -> None:
    """An invalid value raises SettingsError naming the variable and quoting the value."""
    with pytest.raises(SettingsError) as info:
        load_settings({name: value})
    assert str(info.value).startswith(f"{name}: ") and repr(value) in str(info.value)


def test_secrets_hidden_from_repr() -> None:
    """The API key and the RAG token never appear in repr()."""
    text = repr(load_settings({"OPENAI_API_KEY": "sk-very-secret", "RAG_API_TOKEN": "tok-secret"}))
    assert "sk-very-secret" not in text and "tok-secret" not in text


def test_chainlit_ci_placeholder_key_is_not_an_llm() -> None:
    """The fake key `chainlit run` plants when CI is set does not switch generation on."""
    settings = load_settings({"OPENAI_API_KEY": "sk-FAKE-OPENAI-API-KEY"})
    assert settings.openai_api_key is None
    assert not settings.llm_enabled
