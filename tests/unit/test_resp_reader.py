"""The subscriber's RESP reader: pub/sub frames split anywhere still come out whole and in order."""

from __future__ import annotations

import pytest
import redis

from resilience._redis_store import _RespReader

FRAMES = (
    b"*3\r\n$9\r\nsubscribe\r\n$6\r\nevents\r\n:1\r\n"
    b"*3\r\n$7\r\nmessage\r\n$6\r\nevents\r\n$10\r\n7\nab\ncd\r\nx\r\n"
    b">3\r\n$7\r\nmessage\r\n$6\r\nevents\r\n$0\r\n\r\n"
)
EXPECTED = [(b"subscribe", b"1"), (b"message", b"7\nab\ncd\r\nx"), (b"message", b"")]


@pytest.mark.parametrize("step", [1, 2, 3, 7, 64, len(FRAMES)])
def test_frames_split_at_any_byte(step: int) -> None:
    """Feeding the stream in chunks of any size yields the same frames (payloads may hold CR LF)."""
    reader = _RespReader()
    frames = []
    for start in range(0, len(FRAMES), step):
        frames.extend(reader.feed(FRAMES[start : start + step]))
    assert frames == EXPECTED
    assert not reader.buf


def test_error_reply_raises() -> None:
    """A server error (e.g. NOAUTH) surfaces as an exception, so the subscriber reconnects."""
    with pytest.raises(redis.ResponseError, match="NOAUTH"):
        _RespReader().feed(b"-NOAUTH Authentication required.\r\n")
