"""The chat UI in a real headless Chromium against a real ``chainlit run`` server.

Playwright drives Debian's Chromium (``/usr/bin/chromium``, installed by ``make sysdeps``); it never
downloads a browser. Selectors are the ones Chainlit's own end-to-end tests use (../shared/CHAINLIT.md).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from .chainlit_driver import chainlit_server, free_port

pytestmark = pytest.mark.integration

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
# What Chromium needs on a closed network: no sandbox as root, no GPU, nothing phoning home.
# Playwright adds --headless and a new empty --user-data-dir of its own.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ANSWER = '[data-step-type="assistant_message"] .message-content'
# Text that must never reach the user: Python tracebacks, our handler's apology, Chainlit's own errors.
ERROR_TEXTS = (
    "Traceback",
    'File "',
    "something went wrong",
    "An error occurred",
    "Could not reach the server",
)
ANSWER_TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the module; a missing browser fails under CI and skips elsewhere."""
    if not os.access(CHROMIUM, os.X_OK):
        message = f"Chromium not found at {CHROMIUM} (run `make sysdeps`, or set CHROMIUM_PATH)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context (no cookies, no storage) and one page in it."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        yield context.new_page()
    finally:
        context.close()


def _ask(page: Page, url: str, question: str, *, submit_with_enter: bool = False) -> str:
    """Open the chat, type ``question`` as a user would, submit, wait for the whole answer; return its text."""
    page.goto(url)
    chat_input = page.locator("#chat-input")
    expect(chat_input).to_be_editable(timeout=ANSWER_TIMEOUT_MS)
    # Typed key by key, not fill(): the composer keeps the text in React state, and an Enter right after
    # fill() is handled with the stale (empty) value and silently ignored.
    chat_input.press_sequentially(question)
    submit = page.locator("#chat-submit")
    expect(submit).to_be_enabled()  # disabled while the composer's state is empty
    if submit_with_enter:
        chat_input.press("Enter")
    else:
        submit.click()
    expect(page.locator('[data-step-type="user_message"]').last).to_contain_text(question)
    expect(chat_input).to_have_value("")
    answer = page.locator(ANSWER).last
    # The footer (sources, degraded notice) is streamed last, in one token, so "Sources" means the text is
    # complete; the task must also have ended (#stop-button gone) before the page is judged.
    expect(answer).to_contain_text("Sources", timeout=ANSWER_TIMEOUT_MS)
    expect(page.locator("#stop-button")).to_have_count(0, timeout=ANSWER_TIMEOUT_MS)
    return answer.inner_text()


def _assert_no_error_shown(page: Page) -> None:
    body = page.locator("body").inner_text()
    shown = [text for text in ERROR_TEXTS if text.lower() in body.lower()]
    assert not shown, f"error text {shown} shown in the page:\n{body[-3000:]}"


def test_browser_gets_cited_answer_from_user_guide(page: Page, tmp_path: Path) -> None:
    """With no configuration, a question typed in the browser gets a cited answer from knowledge/."""
    with chainlit_server({"INDEX_PATH": str(tmp_path / "index.sqlite3")}, log=tmp_path / "chainlit.log") as url:
        text = _ask(page, url, "How do I run several instances with Redis?")
        page.screenshot(path=tmp_path / "answer.png", full_page=True)
        _assert_no_error_shown(page)
    assert "[1]" in text, text
    assert "Sources" in text
    assert "redis" in text.lower()
    assert "Degraded mode" not in text
    expect(page.locator("#chat-input")).to_be_editable()


def test_browser_answer_arrives_degraded_when_rag_service_is_down(page: Page, tmp_path: Path) -> None:
    """With the RAG service on a closed port, the browser still gets a cited answer marked degraded."""
    env = {"INDEX_PATH": str(tmp_path / "index.sqlite3"), "RAG_API_URL": f"http://127.0.0.1:{free_port()}"}
    with chainlit_server(env, log=tmp_path / "chainlit.log") as url:
        text = _ask(page, url, "How do circuit breakers work here?", submit_with_enter=True)
        page.screenshot(path=tmp_path / "degraded.png", full_page=True)
        _assert_no_error_shown(page)
    assert "[1]" in text, text
    assert "Degraded mode" in text, text
    assert "knowledge service unavailable" in text
