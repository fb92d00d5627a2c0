"""Start a real ``chainlit run`` server and talk to it over Socket.IO the way the browser does.

Used by end-to-end tests; see ../shared/CHAINLIT.md ("Wire protocol") for the events.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import socketio

ROOT = Path(__file__).resolve().parents[2]
CHAINLIT = Path(sys.executable).with_name("chainlit")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def chainlit_server(env: Mapping[str, str], *, app: str = "chainlit_app_voice.py", log: Path) -> Iterator[str]:
    """Run ``chainlit run APP --headless`` on a free port; yield its base URL once ``/health`` answers."""
    port = free_port()
    # Our settings come only from ``env``. And never pass CI through: with CI set, `chainlit run` turns
    # on its "CI mode", which plants OPENAI_API_KEY=sk-FAKE-... in its environment (chainlit/cli).
    ours = ("RESILIENCE", "REDIS_", "OPENAI_", "RAG_", "LLM_", "EMBEDDINGS_", "KNOWLEDGE_DIR", "INDEX_PATH")
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(ours) and k != "CI"}
    full_env.update({"CHAINLIT_APP_ROOT": str(ROOT), **env})
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(CHAINLIT), "run", app, "--headless", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"chainlit exited with {proc.returncode}: {log.read_text()[-2000:]}")
                try:
                    if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"chainlit did not become healthy: {log.read_text()[-2000:]}")
                time.sleep(0.1)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@dataclass
class Turn:
    """What the server sent for one user message."""

    events: list[tuple[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def assistant_text(self) -> str:
        """The final text of the last assistant message of the turn."""
        texts = [
            data["output"]
            for name, data in self.events
            if name in ("new_message", "update_message")
            and isinstance(data, dict)
            and data.get("type") == "assistant_message"
        ]
        return texts[-1] if texts else ""

    @property
    def streamed(self) -> str:
        """All stream tokens of the turn, concatenated."""
        return "".join(data["token"] for name, data in self.events if name == "stream_token")

    def names(self) -> list[str]:
        """Event names in arrival order."""
        return [name for name, _ in self.events]


class ChatClient:
    """One browser-like chat session."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sio = socketio.AsyncClient()
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        @self.sio.on("*")
        async def _any(event: str, data: Any = None) -> None:
            await self._queue.put((event, data))

    async def connect(self) -> None:
        """Open the session and run on_chat_start."""
        auth = {
            "clientType": "webapp",
            "sessionId": str(uuid.uuid4()),
            "threadId": "",
            "userEnv": "{}",
            "chatProfile": "",
        }
        await self.sio.connect(self.url, socketio_path="/ws/socket.io", auth=auth, transports=["websocket"])
        await self.sio.emit("connection_successful")

    async def ask(self, text: str, timeout_s: float = 20.0) -> Turn:
        """Send one user message; collect events until ``task_end`` after an assistant message."""
        while not self._queue.empty():
            self._queue.get_nowait()
        message = {
            "id": str(uuid.uuid4()),
            "type": "user_message",
            "output": text,
            "name": "User",
            "createdAt": datetime.datetime.now(datetime.UTC).isoformat(),
            "threadId": "",
            "metadata": {},
        }
        turn = Turn()
        start = time.perf_counter()
        await self.sio.emit("client_message", {"message": message, "fileReferences": []})
        async with asyncio.timeout(timeout_s):
            while True:
                name, data = await self._queue.get()
                turn.events.append((name, data))
                if name == "task_end" and turn.assistant_text:
                    break
        turn.seconds = time.perf_counter() - start
        return turn

    async def close(self) -> None:
        """Free the server-side session, then disconnect."""
        try:
            await self.sio.call("clear_session", timeout=5)
        except Exception:  # an old server may not acknowledge; disconnecting is enough then
            pass
        await self.sio.disconnect()
