"""BreakerConfig validation and load_config: defaults + TOML file + RESILIENCE__* environment overrides."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from resilience import BreakerConfig, ConfigError, load_config
from resilience.config import DEFAULT_FAILURE_THRESHOLD, DEFAULT_RESET_TIMEOUT_S


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "breakers.toml"
    path.write_text(text)
    return path


# ---------------------------------------------------------------- BreakerConfig


def test_defaults_are_named_constants() -> None:
    """The default config uses the documented named constants."""
    cfg = BreakerConfig()
    assert cfg.failure_threshold == DEFAULT_FAILURE_THRESHOLD
    assert cfg.reset_timeout_s == DEFAULT_RESET_TIMEOUT_S
    assert cfg.include == (Exception,)


def test_config_is_frozen_and_keyword_only() -> None:
    """BreakerConfig cannot be mutated or built positionally."""
    cfg = BreakerConfig()
    with pytest.raises(AttributeError):
        cfg.failure_threshold = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        BreakerConfig(3)  # type: ignore[misc]


def test_timedelta_is_normalised_to_seconds() -> None:
    """Durations given as timedelta become float seconds."""
    cfg = BreakerConfig(reset_timeout_s=timedelta(seconds=5), call_timeout_s=timedelta(milliseconds=250))  # type: ignore[arg-type]
    assert cfg.reset_timeout_s == 5.0
    assert cfg.call_timeout_s == 0.25


def test_single_exception_type_becomes_tuple() -> None:
    """include/exclude accept a single exception type."""
    assert BreakerConfig(exclude=KeyError).exclude == (KeyError,)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "key", "shown"),
    [
        ({"failure_threshold": 0}, "failure_threshold", "0"),
        ({"failure_threshold": True}, "failure_threshold", "True"),
        ({"failure_threshold": 2.5}, "failure_threshold", "2.5"),
        ({"failure_rate_threshold": 1.5}, "failure_rate_threshold", "1.5"),
        ({"failure_rate_threshold": 0}, "failure_rate_threshold", "0"),
        ({"slow_call_duration_s": -1}, "slow_call_duration_s", "-1"),
        ({"slow_call_rate_threshold": None}, "slow_call_rate_threshold", "None"),
        ({"window_type": "sliding"}, "window_type", "'sliding'"),
        ({"window_size": 0}, "window_size", "0"),
        ({"window_type": "time", "window_size": 90_000}, "window_size", "90000"),
        ({"minimum_calls": -3}, "minimum_calls", "-3"),
        ({"reset_timeout_s": 0}, "reset_timeout_s", "0"),
        ({"reset_timeout_s": float("inf")}, "reset_timeout_s", "inf"),
        ({"reset_timeout_s": "30"}, "reset_timeout_s", "'30'"),
        ({"reset_backoff": 0.5}, "reset_backoff", "0.5"),
        ({"max_reset_timeout_s": 10, "reset_timeout_s": 20}, "max_reset_timeout_s", "10"),
        ({"half_open_max_calls": 0}, "half_open_max_calls", "0"),
        ({"success_threshold": 0}, "success_threshold", "0"),
        ({"trial_lease_s": 0}, "trial_lease_s", "0"),
        ({"call_timeout_s": 0}, "call_timeout_s", "0"),
        ({"include": (ValueError, "x")}, "include", "'x'"),
        ({"exclude": [KeyError]}, "exclude", "[<class 'KeyError'>]"),
        ({"is_failure": 3}, "is_failure", "3"),
    ],
)
def test_invalid_values_name_key_and_quote_value(changes: dict[str, Any], key: str, shown: str) -> None:
    """Every invalid value raises ConfigError (a ValueError) naming the key and quoting the value."""
    with pytest.raises(ConfigError) as info:
        BreakerConfig(**changes)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert message.startswith(key + ":")
    assert shown in message


def test_counts_include_exclude_predicate() -> None:
    """counts() applies exclude first, then include, then the predicate."""
    cfg = BreakerConfig(include=(OSError,), exclude=(FileNotFoundError,), is_failure=lambda e: "skip" not in str(e))
    assert cfg.counts(ConnectionError("x"))
    assert not cfg.counts(FileNotFoundError())
    assert not cfg.counts(ValueError())
    assert not cfg.counts(ConnectionError("skip me"))


def test_replace_validates() -> None:
    """replace() returns a validated copy."""
    cfg = BreakerConfig().replace(failure_threshold=2)
    assert cfg.failure_threshold == 2
    with pytest.raises(ConfigError, match="failure_threshold"):
        cfg.replace(failure_threshold=-1)


# ---------------------------------------------------------------- load_config


def test_no_file_no_env_gives_builtin_defaults() -> None:
    """Without a file or overrides, every breaker gets the built-in defaults."""
    config = load_config(None, environ={})
    assert config.defaults == BreakerConfig()
    assert config.breakers == {}
    assert config.for_name("anything") == BreakerConfig()


def test_toml_defaults_and_per_breaker_tables(tmp_path: Path) -> None:
    """[defaults] applies to every breaker; [breakers.NAME] layers on top of it."""
    path = _toml(
        tmp_path,
        """
[defaults]
failure_threshold = 7
reset_timeout_s = 12

[breakers.rag_api]
failure_rate_threshold = 0.25
window_type = "time"
window_size = 60
call_timeout_s = 8
exclude = ["builtins.KeyError", "LookupError"]  # builtin names may be bare
slow_call_duration_s = "off"
""",
    )
    config = load_config(path, environ={})
    assert config.defaults.failure_threshold == 7
    assert config.defaults.reset_timeout_s == 12.0
    rag = config.for_name("rag_api")
    assert (rag.failure_threshold, rag.reset_timeout_s) == (7, 12.0)  # inherited from [defaults]
    assert (rag.failure_rate_threshold, rag.window_type, rag.window_size) == (0.25, "time", 60)
    assert rag.call_timeout_s == 8.0
    assert rag.exclude == (KeyError, LookupError)
    assert rag.slow_call_duration_s is None
    assert config.for_name("llm") == config.defaults


def test_env_overrides_file(tmp_path: Path) -> None:
    """RESILIENCE__DEFAULTS__X and RESILIENCE__NAME__X override the file (names case-insensitive)."""
    path = _toml(tmp_path, "[defaults]\nreset_timeout_s = 12\n[breakers.rag_api]\nfailure_threshold = 4\n")
    config = load_config(
        path,
        environ={
            "RESILIENCE__DEFAULTS__RESET_TIMEOUT_S": "10",
            "RESILIENCE__RAG_API__FAILURE_THRESHOLD": "3",
            "resilience__llm__call_timeout_s": "2.5",
            "RESILIENCE__STT__FAILURE_RATE_THRESHOLD": "none",
            "RESILIENCE__TTS__EXCLUDE": "builtins.KeyError, builtins.IndexError",
            "RESILIENCE__TTS__WINDOW_TYPE": "time",
            "UNRELATED": "x",
        },
    )
    assert config.defaults.reset_timeout_s == 10.0
    rag = config.for_name("rag_api")
    assert (rag.failure_threshold, rag.reset_timeout_s) == (3, 10.0)
    assert config.for_name("llm").call_timeout_s == 2.5
    assert config.for_name("stt").failure_rate_threshold is None
    tts = config.for_name("tts")
    assert tts.exclude == (KeyError, IndexError)
    assert tts.window_type == "time"


@pytest.mark.parametrize(
    ("environ", "key", "value"),
    [
        ({"RESILIENCE__DEFAULTS__RESET_TIMEOUT_S": "soon"}, "RESILIENCE__DEFAULTS__RESET_TIMEOUT_S", "'soon'"),
        ({"RESILIENCE__RAG_API__FAILURE_THRESHOLD": "0"}, "RESILIENCE__RAG_API__FAILURE_THRESHOLD", "0"),
        ({"RESILIENCE__RAG_API__FAILURE_THRESHOLD": "2.5"}, "RESILIENCE__RAG_API__FAILURE_THRESHOLD", "2.5"),
        ({"RESILIENCE__RAG_API__WINDOW_TYPE": "rolling"}, "RESILIENCE__RAG_API__WINDOW_TYPE", "'rolling'"),
        ({"RESILIENCE__RAG_API__EXCLUDE": "nope"}, "RESILIENCE__RAG_API__EXCLUDE[0]", "'nope'"),
        ({"RESILIENCE__RAG_API__EXCLUDE": "nomodule.Error"}, "RESILIENCE__RAG_API__EXCLUDE[0]", "'nomodule.Error'"),
        ({"RESILIENCE__RAG_API": "3"}, "RESILIENCE__RAG_API", "'3'"),
        ({"RESILIENCE__A__B__C": "3"}, "RESILIENCE__A__B__C", "'3'"),
    ],
)
def test_invalid_env_values(environ: dict[str, str], key: str, value: str) -> None:
    """A bad env override raises ConfigError naming the key and quoting the value."""
    with pytest.raises(ConfigError) as info:
        load_config(None, environ=environ)
    assert key in str(info.value)
    assert value in str(info.value)


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ("[defaults]\nfailure_threshold = 0\n", "defaults.failure_threshold", "0"),
        ('[defaults]\nfailure_threshold = "five"\n', "defaults.failure_threshold", "'five'"),
        ("[breakers.rag_api]\nreset_backoff = 0.5\n", "breakers.rag_api.reset_backoff", "0.5"),
        ('[breakers.rag_api]\nwindow_type = "rolling"\n', "breakers.rag_api.window_type", "'rolling'"),
        ('[breakers.rag_api]\nexclude = "builtins.KeyError"\n', "breakers.rag_api.exclude", "'builtins.KeyError'"),
        ('[breakers.rag_api]\nexclude = ["builtins.len"]\n', "breakers.rag_api.exclude[0]", "'builtins.len'"),
        ('[breakers.rag_api]\nexclude = ["NoSuchError"]\n', "breakers.rag_api.exclude[0]", "'NoSuchError'"),
        ("[defaults]\nis_failure = 1\n", "defaults.is_failure", "unknown setting"),
        ("[defaults]\nfailure_treshold = 3\n", "defaults.failure_treshold", "unknown setting"),
        ("[breakers.rag_api]\nretries = 3\n", "breakers.rag_api.retries", "unknown setting"),
        ("[circuit]\nx = 1\n", "circuit", "unknown top-level"),
        ("defaults = 3\n", "defaults", "3"),
        ("breakers = 3\n", "breakers", "3"),
        ("[breakers]\nrag_api = 3\n", "breakers.rag_api", "3"),
    ],
)
def test_invalid_file_values(tmp_path: Path, text: str, key: str, value: str) -> None:
    """A bad TOML value or unknown key raises ConfigError naming the key and quoting the value."""
    with pytest.raises(ConfigError) as info:
        load_config(_toml(tmp_path, text), environ={})
    assert key in str(info.value)
    assert value in str(info.value)


def test_unknown_env_setting(tmp_path: Path) -> None:
    """An env override of an unknown setting names it."""
    with pytest.raises(ConfigError, match="RESILIENCE__RAG_API__COLOUR: unknown setting"):
        load_config(None, environ={"RESILIENCE__RAG_API__COLOUR": "red"})


def test_malformed_toml(tmp_path: Path) -> None:
    """A file that is not TOML raises ConfigError naming the file."""
    path = _toml(tmp_path, "[defaults\nfailure_threshold = \n")
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        load_config(path, environ={})
    assert str(path) in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    """A configured file that does not exist raises ConfigError naming it."""
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="not found") as info:
        load_config(path, environ={})
    assert str(path) in str(info.value)


def test_base_config_is_the_starting_point() -> None:
    """load_config applies the file's defaults on top of ``base``."""
    config = load_config(None, environ={"RESILIENCE__DEFAULTS__MINIMUM_CALLS": "7"}, base=BreakerConfig(window_size=9))
    assert (config.defaults.window_size, config.defaults.minimum_calls) == (9, 7)


def test_breaker_names_are_case_insensitive(tmp_path: Path) -> None:
    """[breakers.RAG_API] in TOML and RESILIENCE__RAG_API__* configure the proxy name "rag_api" together."""
    path = tmp_path / "b.toml"
    path.write_text("[breakers.RAG_API]\nfailure_threshold = 2\n")
    config = load_config(path, environ={"RESILIENCE__RAG_API__WINDOW_SIZE": "7"})
    assert config.for_name("rag_api").failure_threshold == 2
    assert config.for_name("rag_api").window_size == 7


def test_raising_only_reset_timeout_lifts_the_default_cap() -> None:
    """reset_timeout_s above the default cap raises the cap instead of failing; an explicit lower cap still fails."""
    assert BreakerConfig(reset_timeout_s=600).max_reset_timeout_s == 600
    with pytest.raises(ConfigError, match="max_reset_timeout_s"):
        BreakerConfig(reset_timeout_s=600, max_reset_timeout_s=100)
