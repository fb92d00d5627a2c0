"""Regressions found in review: each test failed before its fix (or documents a known, unfixed bug)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

import resilience
from resilience import BreakerConfig, CircuitState, PersistentCircuitBreaker
from resilience._redis_store import redact_url
from resilience._state import open_duration_s
from resilience.testing import FakeClock


class Boom(Exception):
    """The protected function's own error."""


def boom() -> None:
    raise Boom("down")


def test_growing_open_duration_never_overflows() -> None:
    """A long outage with reset_backoff > 1 keeps the cap; 2.0 ** 1024 used to raise OverflowError."""
    cfg = BreakerConfig(reset_timeout_s=1.0, reset_backoff=2.0, max_reset_timeout_s=300.0)
    assert open_duration_s(1025, cfg) == 300.0
    assert open_duration_s(10**6, cfg) == 300.0


def test_many_failed_trials_keep_reopening_and_raise_the_callers_error(caplog: pytest.LogCaptureFixture) -> None:
    """After 1100 failed trials the caller still gets its own exception and the breaker reopens."""
    caplog.set_level(logging.ERROR, logger="resilience")  # one warning per reopening is expected noise
    clock = FakeClock()
    cfg = BreakerConfig(
        failure_threshold=1,
        failure_rate_threshold=None,
        reset_timeout_s=1.0,
        reset_backoff=2.0,
        max_reset_timeout_s=1.0,
    )
    breaker = PersistentCircuitBreaker("svc", cfg, clock=clock)
    for _ in range(1100):
        with pytest.raises(Boom):
            breaker.call_sync(boom)
        assert breaker.state is CircuitState.OPEN
        clock.advance(1.0)


def test_wall_clock_step_back_does_not_extend_open_period() -> None:
    """The open period ends by monotonic time on every path; a wall step of -1 h used to keep it open 1 h more."""
    clock = FakeClock()
    cfg = BreakerConfig(failure_threshold=1, failure_rate_threshold=None, reset_timeout_s=30.0)
    breaker = PersistentCircuitBreaker("svc", cfg, clock=clock)
    with pytest.raises(Boom):
        breaker.call_sync(boom)
    clock.skew_wall(-3600.0)
    clock.advance(31.0)
    assert breaker.call_sync(lambda: "ok") == "ok"
    assert breaker.state is CircuitState.CLOSED


def test_rate_rule_works_when_minimum_calls_exceeds_count_window() -> None:
    """window_size=10 with the default minimum_calls=20: the rate rule used to be silently off for good."""
    cfg = BreakerConfig(failure_threshold=None, failure_rate_threshold=0.5, window_size=10)
    breaker = PersistentCircuitBreaker("svc", cfg, clock=FakeClock())
    for _ in range(10):
        with pytest.raises(Boom):
            breaker.call_sync(boom)
    assert breaker.state is CircuitState.OPEN


async def test_stream_frees_trial_permit_when_calling_fn_raises() -> None:
    """An async-generator function that raises when called (bad arguments) frees its half-open permit at once."""
    clock = FakeClock()
    cfg = BreakerConfig(failure_threshold=1, failure_rate_threshold=None, reset_timeout_s=1.0, trial_lease_s=60.0)
    breaker = PersistentCircuitBreaker("svc", cfg, clock=clock)
    with pytest.raises(Boom):
        breaker.call_sync(boom)
    clock.advance(2.0)

    async def agen(x: int) -> AsyncIterator[int]:
        yield x

    with pytest.raises(TypeError):
        async for _ in breaker.stream(agen):  # missing argument
            pass
    # The permit was returned (the call counted as a failed trial): the breaker is not stuck in
    # half-open rejecting everything until the 60 s lease expires.
    assert breaker.state is CircuitState.OPEN
    clock.advance(2.0)
    assert await breaker.call(asyncio.sleep, 0, "ok") == "ok"
    assert breaker.state is CircuitState.CLOSED


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("redis://127.0.0.1:6379/0?password=s3cret", "s3cret"),
        ("unix:///run/redis.sock?db=2&password=s3cret", "s3cret"),
        ("redis://user:s3cret@127.0.0.1:6379/0?password=other", "other"),
    ],
)
def test_redact_url_hides_password_query_parameter(url: str, secret: str) -> None:
    """redis-py reads ?password=; it used to appear verbatim in logs and registry.status()."""
    redacted = redact_url(url)
    assert secret not in redacted and "s3cret" not in redacted
    assert "password=***" in redacted


def test_redact_url_leaves_urls_without_password_untouched() -> None:
    """Nothing to hide: the URL is shown exactly as configured."""
    for url in ("redis://127.0.0.1:6379/0", "unix:///run/redis.sock?db=2"):
        assert redact_url(url) == url


# ---------------------------------------------------------------- forced-open breakers in rag/ (fixed)


async def test_forced_open_rag_api_still_answers_from_local_index() -> None:
    """Forcing rag_api open (an operator's 'use the local index') must degrade, not fail, the answer."""
    import httpx

    from rag.client import RagClient
    from rag.generate import Generator
    from rag.pipeline import AnswerDone, Assistant
    from tests.fakes import ListRetriever, passage

    corpus = [passage(1, "Set REDIS_URL to share breaker state between instances.", title="Redis")]
    registry = await resilience.init_registry(environ={})
    await registry.get("rag_api").force_open()
    remote = RagClient("http://rag.invalid", transport=httpx.MockTransport(lambda r: httpx.Response(500)))
    assistant = Assistant(
        local=ListRetriever(corpus), generator=Generator(None, model="-", deadline_s=1.0), remote=remote
    )
    done = [e async for e in assistant.answer("How do I share breaker state?") if isinstance(e, AnswerDone)][-1]
    await remote.aclose()
    assert done.mode == "extractive", done


async def test_forced_open_llm_falls_back_to_extractive() -> None:
    """Forcing llm open must give an extractive answer, not an exception (the chat shows 'Sorry...')."""
    from openai import AsyncOpenAI

    from rag.generate import Generation, Generator
    from tests.fakes import passage

    corpus = [passage(1, "Set REDIS_URL to share breaker state between instances.", title="Redis")]
    registry = await resilience.init_registry(environ={})
    await registry.get("llm").force_open()
    client = AsyncOpenAI(api_key="x", base_url="http://127.0.0.1:9/v1", max_retries=0)
    try:
        events = [e async for e in Generator(client, model="m", deadline_s=1.0).stream("share state?", corpus)]
    finally:
        await client.close()
    final = events[-1]
    assert isinstance(final, Generation) and final.mode == "extractive"


def test_warm_up_builds_no_second_breaker_for_a_mixed_case_proxy_name() -> None:
    """Config names are lower-cased, so warm-up used to build a phantom 'ragapi' beside the proxy's 'RagAPI'."""
    proxy = resilience.CircuitBreakerProxy("RagAPI")
    try:
        registry = resilience.init_registry_sync(environ={"RESILIENCE__RAGAPI__FAILURE_THRESHOLD": "2"})
        assert "RagAPI" in registry.names()
        assert "ragapi" not in registry.names()
        assert proxy.breaker is not None and proxy.breaker.config.failure_threshold == 2
    finally:
        resilience._registry._declared.discard("RagAPI")  # declared names are process-wide
