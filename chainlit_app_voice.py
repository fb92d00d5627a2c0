"""Chainlit entry point: handlers and wiring only (no I/O at import).

Run with ``make run`` (or ``chainlit run chainlit_app_voice.py``). On app start: the breaker registry
is bound (until then, and if that fails, decorated calls pass straight through), settings are read, the
local index is synced with the knowledge folder, and the :class:`~rag.pipeline.Assistant` is built.
Chainlit swallows start-up exceptions, so readiness is tracked here and told to the user.
"""

from __future__ import annotations

import asyncio
import logging

import chainlit as cl

from rag.pipeline import AnswerDone, Assistant, TextDelta, Turn, build_local_retriever
from rag.settings import SettingsError, load_settings
from resilience import init_registry, shutdown_registry

logger = logging.getLogger(__name__)

HISTORY_TURNS = 6
STARTING_TEXT = "The assistant is still starting; please try again in a few seconds."
SORRY_TEXT = "\n\nSorry, something went wrong while answering. Please try again."


# Plain classes, not dataclasses: ``chainlit run`` executes this file without registering it in
# sys.modules, and @dataclass (with string annotations) looks its module up there and crashes.
class AppState:
    """Process-wide state built on app start."""

    def __init__(self) -> None:
        self.assistant: Assistant | None = None
        self.problem = STARTING_TEXT


class ChatState:
    """Per-session state, stored under one ``cl.user_session`` key."""

    def __init__(self) -> None:
        self.history: list[Turn] = []


app_state = AppState()


@cl.on_app_startup
async def startup() -> None:
    """Bind the breaker registry, build the local index and the assistant."""
    try:
        await init_registry()
    except Exception:  # Chainlit swallows start-up errors; say why protection is off
        logger.exception("app.registry_failed: breakers pass calls through until restart")
    try:
        settings = load_settings()
        local = await asyncio.to_thread(build_local_retriever, settings)
        app_state.assistant = Assistant.from_settings(settings, local=local)
    except SettingsError as exc:
        logger.exception("app.startup_failed")
        app_state.problem = f"The assistant is misconfigured: {exc}"
    except Exception:
        logger.exception("app.startup_failed")
        app_state.problem = "The assistant could not start (see the server log)."


@cl.on_app_shutdown
async def shutdown() -> None:
    """Close the assistant's clients, then the registry and its store."""
    if app_state.assistant is not None:
        await app_state.assistant.aclose()
    await shutdown_registry()


def _chat_state() -> ChatState:
    state = cl.user_session.get("chat")
    if not isinstance(state, ChatState):
        state = ChatState()
        cl.user_session.set("chat", state)
    return state


def render_footer(done: AnswerDone) -> str:
    """Markdown listing the cited sources (with a short excerpt each) and any degraded-mode notice.

    Sources are inline text, not side elements: Chainlit side panels are looked up by name across the
    whole session, so "Source 1" of an earlier answer would open with this one's.
    """
    blocks: list[str] = []
    if done.citations:
        items = ["**Sources**"]
        for citation in done.citations:
            p = citation.passage
            where = f"{p.title} — {p.heading}" if p.heading else p.title
            excerpt = " ".join((p.snippet or p.text).replace("`", "").split())  # no half code spans
            if len(excerpt) > 160:
                excerpt = excerpt[:157].rstrip() + "…"
            items.append(f"- [{citation.number}] {where} (`{p.source}`): “{excerpt}”")
        blocks.append("\n".join(items))
    if done.degraded:
        blocks.append("> ⚠️ Degraded mode: " + "; ".join(done.degraded) + ".")
    elif done.mode == "extractive":
        blocks.append("*Quoted from the documents (no language model configured).*")
    return "\n\n" + "\n\n".join(blocks) if blocks else ""


@cl.on_message
async def on_message(message: cl.Message) -> None:
    """Answer one chat message: stream the text, then show the sources and any degraded-mode notice."""
    assistant = app_state.assistant
    if assistant is None:
        await cl.Message(content=app_state.problem).send()
        return
    chat = _chat_state()
    question = message.content or ""
    reply = cl.Message(content="")
    done: AnswerDone | None = None
    try:
        async for event in assistant.answer(question, chat.history):
            if isinstance(event, TextDelta):
                await reply.stream_token(event.text)
            else:
                done = event
    except Exception:  # never a stack trace in the chat
        logger.exception("app.answer_failed")
        await reply.stream_token(SORRY_TEXT)
    if done is not None:
        footer = render_footer(done)
        if footer:
            await reply.stream_token(footer)
        if done.mode != "invalid_input":
            chat.history = [*chat.history, Turn("user", question), Turn("assistant", done.text)][-HISTORY_TURNS:]
    await reply.send()
