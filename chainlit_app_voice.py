"""Chainlit entry point: handlers and wiring only (no I/O at import).

Run with ``make run`` (or ``chainlit run chainlit_app_voice.py``). Breakers are bound on app start;
until then (and if start-up fails) the decorated calls pass straight through.
"""

from __future__ import annotations

import logging

import chainlit as cl

from resilience import CircuitOpenError, init_registry, rag_api_breaker, shutdown_registry

logger = logging.getLogger(__name__)


@rag_api_breaker
async def answer(question: str) -> str:
    """Placeholder answer path until retrieval lands: echoes through the rag_api breaker."""
    return f"You said: {question}"


@cl.on_app_startup
async def startup() -> None:
    """Bind the breaker registry (memory, or Redis when REDIS_URL is set)."""
    try:
        await init_registry()
    except Exception:  # Chainlit swallows start-up errors; say why protection is off
        logger.exception("app.registry_failed: breakers pass calls through until restart")


@cl.on_app_shutdown
async def shutdown() -> None:
    """Close the registry and its store."""
    await shutdown_registry()


@cl.on_message
async def on_message(message: cl.Message) -> None:
    """Answer one chat message."""
    text = (message.content or "").strip()
    if not text:
        await cl.Message(content="Please type a question.").send()
        return
    try:
        reply = await answer(text)
    except CircuitOpenError as exc:
        reply = f"The knowledge service is unavailable right now; try again in {exc.retry_after_s:.0f}s."
    await cl.Message(content=reply).send()
