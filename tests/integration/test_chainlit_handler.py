"""Proxied async functions registered as Chainlit hooks are really called by Chainlit's own wrappers.

Chainlit's decorators register ``wrap_user_function(fn)``, which reads ``inspect.signature(fn)``, calls
the handler by keyword and awaits it only if ``inspect.iscoroutinefunction(fn)``. The proxy's wrappers
must survive that. A recording emitter stands in for the socket (see ../shared/CHAINLIT.md "Testing").
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from typing import Any
from unittest.mock import Mock

import chainlit as cl
import pytest
from chainlit.config import config
from chainlit.context import ChainlitContext, context_var
from chainlit.emitter import BaseChainlitEmitter
from chainlit.session import WebsocketSession
from chainlit.types import InputAudioChunk

from resilience import BreakerConfig, CircuitBreakerProxy, CircuitOpenError, RegistryConfig, init_registry
from resilience.testing import FakeClock


class RecordingEmitter(BaseChainlitEmitter):
    """Records what handlers send instead of writing to a socket."""

    def __init__(self, session: Any) -> None:
        super().__init__(session)
        self.events: list[tuple[str, Any]] = []

    async def task_start(self) -> None:
        self.events.append(("task_start", None))

    async def task_end(self) -> None:
        self.events.append(("task_end", None))

    async def send_step(self, step_dict: Any) -> None:
        self.events.append(("send_step", dict(step_dict)))

    async def update_step(self, step_dict: Any) -> None:
        self.events.append(("update_step", dict(step_dict)))

    def sent_outputs(self) -> list[str]:
        """Outputs of assistant messages sent so far."""
        return [
            str(step["output"])
            for kind, step in self.events
            if kind == "send_step" and step.get("type") == "assistant_message"
        ]


@pytest.fixture
async def emitter(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[RecordingEmitter]:
    """A Chainlit context bound to a mocked websocket session and a recording emitter; hooks restored after."""
    for hook in ("on_message", "on_chat_start", "on_audio_chunk"):
        monkeypatch.setattr(config.code, hook, None)
    session = Mock(spec=WebsocketSession)
    session.id = "session-1"
    session.thread_id = "thread-1"
    recording = RecordingEmitter(session)
    token = context_var.set(ChainlitContext(session, emitter=recording))
    yield recording
    context_var.reset(token)


def _registry_config(name: str) -> RegistryConfig:
    return RegistryConfig(breakers={name: BreakerConfig(failure_threshold=1, failure_rate_threshold=None)})


async def test_on_message_handler_is_called_through_proxy(emitter: RecordingEmitter, clock: FakeClock) -> None:
    """@cl.on_message over a proxied async handler: Chainlit runs it, and its fallback answers when open."""
    received: list[str] = []

    async def apologise(message: cl.Message) -> None:
        await cl.Message(content="The knowledge base is unavailable; please retry shortly.").send()

    @cl.on_message
    @CircuitBreakerProxy("chat_handler", fallback=apologise)
    async def handle(message: cl.Message) -> None:
        """Answer a chat message."""
        received.append(message.content)
        await cl.Message(content=f"echo: {message.content}").send()

    assert config.code.on_message is not None
    await config.code.on_message(cl.Message(content="before init"))
    registry = await init_registry(_registry_config("chat_handler"), clock=clock)
    await config.code.on_message(cl.Message(content="after init"))
    assert registry.get("chat_handler").metrics()["successes"] == 1
    await registry.get("chat_handler").force_open()
    await config.code.on_message(cl.Message(content="while open"))
    assert received == ["before init", "after init"]
    assert emitter.sent_outputs() == [
        "echo: before init",
        "echo: after init",
        "The knowledge base is unavailable; please retry shortly.",
    ]


async def test_on_chat_start_is_awaited_as_a_task(emitter: RecordingEmitter, clock: FakeClock) -> None:
    """@cl.on_chat_start (a with_task hook) awaits the proxied coroutine function between task_start and task_end."""
    started: list[str] = []

    @cl.on_chat_start
    @CircuitBreakerProxy("chat_start")
    async def start() -> None:
        started.append("ran")

    await init_registry(_registry_config("chat_start"), clock=clock)
    await config.code.on_chat_start()
    assert started == ["ran"]
    kinds = [kind for kind, _ in emitter.events]
    assert (kinds[0], kinds[-1]) == ("task_start", "task_end")


async def test_on_audio_chunk_receives_its_argument_by_keyword(emitter: RecordingEmitter, clock: FakeClock) -> None:
    """Chainlit calls on_audio_chunk(chunk=...) by the name it reads from the signature; the proxy keeps it."""
    chunks: list[bytes] = []

    @cl.on_audio_chunk
    @CircuitBreakerProxy("stt_chunks")
    async def on_chunk(chunk: InputAudioChunk) -> None:
        chunks.append(chunk.data)

    registry = await init_registry(_registry_config("stt_chunks"), clock=clock)
    chunk = InputAudioChunk(isStart=True, mimeType="pcm16", data=b"\x00\x01", elapsedTime=0.0)
    await config.code.on_audio_chunk(chunk)
    assert chunks == [b"\x00\x01"]
    await registry.get("stt_chunks").force_open()
    await config.code.on_audio_chunk(chunk)  # rejected: Chainlit logs the CircuitOpenError, nothing raises
    assert chunks == [b"\x00\x01"]
    assert registry.get("stt_chunks").metrics()["rejections"] == 1


def _naive(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A breaker-like decorator without functools.wraps (what the proxy must not be)."""

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        return await fn(*args, **kwargs)

    return wrapper


async def test_unwrapped_decorator_would_never_run(emitter: RecordingEmitter) -> None:
    """Without functools.wraps Chainlit calls wrapper(args=chunk): a TypeError it swallows, the handler never runs."""
    chunks: list[bytes] = []

    @cl.on_audio_chunk
    @_naive
    async def on_chunk(chunk: InputAudioChunk) -> None:
        chunks.append(chunk.data)

    await config.code.on_audio_chunk(InputAudioChunk(isStart=True, mimeType="pcm16", data=b"x", elapsedTime=0.0))
    assert chunks == []
    assert functools.WRAPPER_ASSIGNMENTS  # the proxy relies on these being copied


async def test_handler_can_turn_rejection_into_a_message(emitter: RecordingEmitter, clock: FakeClock) -> None:
    """The recommended handler shape: catch CircuitOpenError from a proxied dependency and answer politely."""

    @CircuitBreakerProxy("rag_dep")
    async def retrieve(query: str) -> list[str]:
        raise ConnectionError("RAG API down")

    @cl.on_message
    async def handle(message: cl.Message) -> None:
        try:
            passages = await retrieve(message.content)
        except CircuitOpenError as exc:
            await cl.Message(content=f"Search is resting; retry in {exc.retry_after_s:.0f}s.").send()
            return
        except ConnectionError:
            await cl.Message(content="Search failed.").send()
            return
        await cl.Message(content=" ".join(passages)).send()

    await init_registry(_registry_config("rag_dep"), clock=clock)
    await config.code.on_message(cl.Message(content="q1"))
    await config.code.on_message(cl.Message(content="q2"))
    assert emitter.sent_outputs() == ["Search failed.", "Search is resting; retry in 30s."]
