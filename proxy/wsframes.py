"""WebSocket framing (RFC 6455 section 5) as far as a pass-through relay needs it.

A :class:`FrameScanner` watches the bytes one side sends and says which of them may pass to
the other side untouched. It parses frame headers only; payloads are never copied or unmasked,
except the at most 125 bytes of a close frame, which it hands over decoded instead of passing.

Invariants:

* Every byte fed is either passed on (in order) or belongs to a close frame; nothing is
  altered. A frame header is passed only once whole, and a frame's payload follows its header.
* A stream that breaks the rules a relay without extensions relies on stops the scanner with a
  :class:`Violation` (:attr:`FrameScanner.violation`) before any byte of the offending frame
  passes: a reserved bit set (no
  extension is negotiated on either leg), an unknown opcode, a fragmented or over-long control
  frame, a continuation outside a message or a new message inside one, a frame masked the
  wrong way for its direction, or a message (the sum of its fragments) over the size limit.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_KNOWN = frozenset({CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG})

PROTOCOL_ERROR = 1002
MESSAGE_TOO_BIG = 1009
NO_CODE = 1005
"""The code a close frame without a payload stands for (never sent on the wire)."""


class Violation(Exception):
    """The stream broke a framing rule; ``code`` is the close code its sender deserves."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class Close:
    """A close frame's content: ``code`` is :data:`NO_CODE` when it carried none."""

    code: int
    reason: str


def close_frame(code: int, reason: str | None, *, masked: bool) -> bytes:
    """A close frame with ``code`` and ``reason`` (cut to fit 125 bytes), masked when it goes
    to a server."""
    cut = (reason or "").encode("utf-8")[:123].decode("utf-8", "ignore")  # whole characters
    payload = struct.pack("!H", code) + cut.encode("utf-8")
    if not masked:
        return bytes((0x80 | CLOSE, len(payload))) + payload
    key = os.urandom(4)
    return bytes((0x80 | CLOSE, 0x80 | len(payload))) + key + _unmask(key, payload)


def _unmask(key: bytes, data: bytes) -> bytes:
    if not data:
        return b""
    repeated = (key * (len(data) // 4 + 1))[: len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        len(data), "big"
    )


def parse_close(payload: bytes) -> Close:
    """The code and reason of a close frame's (unmasked) payload."""
    if not payload:
        return Close(NO_CODE, "")
    if len(payload) == 1:
        raise Violation(PROTOCOL_ERROR, "close frame with a one-byte payload")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise Violation(1007, "close reason is not UTF-8") from None
    return Close(struct.unpack("!H", payload[:2])[0], reason)


class FrameScanner:
    """Scans what one side sends; :meth:`feed` returns what may pass and the close, if any.

    ``masked`` is whether this side's frames must be masked (a client's) or must not be (a
    server's); ``limit`` bounds a message's total payload.
    """

    __slots__ = (
        "_closing",
        "_header",
        "_in_message",
        "_key",
        "_limit",
        "_masked",
        "_message_size",
        "_remaining",
        "closed",
        "violation",
    )

    def __init__(self, *, masked: bool, limit: int) -> None:
        self._masked = masked
        self._limit = limit
        self._header = b""  # an incomplete header, held back until whole
        self._remaining = 0  # payload bytes of the current frame still to come
        self._closing: bytearray | None = None  # the payload of a close frame being read
        self._key = b""
        self._in_message = False
        self._message_size = 0
        self.closed: Close | None = None
        """The close frame this side sent, once read whole; nothing after it is scanned."""
        self.violation: Violation | None = None
        """The first broken rule; nothing from that frame on passes."""

    @property
    def at_boundary(self) -> bool:
        """Whether everything passed so far ends with a whole frame."""
        return self._remaining == 0 or self._closing is not None

    def feed(self, data: bytes) -> list[bytes]:
        """The parts of ``data`` that may pass, in order (``[data]`` when all of it may).

        After a close frame or a frame breaking the rules (then :attr:`violation` is set),
        nothing more is scanned nor passed.
        """
        if self.closed is not None or self.violation is not None:
            return []
        if self._header:  # an incomplete header held back: it has not passed yet
            data = self._header + data
            self._header = b""
        size = len(data)
        if self._closing is None and self._remaining >= size:  # inside one frame's payload
            self._remaining -= size
            return [data]
        if not self._remaining and self._closing is None and size > 2:
            if self._one_whole_frame(data, size):
                return [data]
            if self.violation is not None:
                return []
        out: list[bytes] = []
        start = 0  # the first byte of ``data`` not yet passed
        pos = 0
        while pos < size:
            if self._remaining:
                take = min(self._remaining, size - pos)
                self._remaining -= take
                if self._closing is not None:  # read here, never passed
                    self._closing += data[pos : pos + take]
                    if not self._remaining:
                        self._finish_close()
                        return out
                    start = pos + take
                pos += take
                continue
            try:
                parsed = self._parse_header(data, pos)
            except Violation as violation:
                self.violation = violation
                return self._cut(out, data, start, pos)
            if parsed is None:
                self._header = data[pos:]
                return self._cut(out, data, start, pos)
            end, opcode, length = parsed
            if opcode == CLOSE:
                out = self._cut(out, data, start, pos)
                start = end
                self._closing = bytearray()
                if not length:
                    self._finish_close()
                    return out
            self._remaining = length
            pos = end
        return self._cut(out, data, start, size)

    def _one_whole_frame(self, data: bytes, size: int) -> bool:
        """Whether ``data`` is exactly one whole frame that is not a close (then checked and
        counted); the common case of a small message, decided without the general loop."""
        first, second = data[0], data[1]
        length = second & 0x7F
        needed = 6 if second & 0x80 else 2
        if length == 126:
            if size < needed + 2:
                return False
            needed += 2
            length = (data[2] << 8) | data[3]
        elif length == 127:
            return False
        if needed + length != size or first & 0x0F == CLOSE:
            return False
        try:
            self._check(first, second, length)
        except Violation as violation:
            self.violation = violation
            return False
        return True

    @staticmethod
    def _cut(out: list[bytes], data: bytes, start: int, end: int) -> list[bytes]:
        if end > start:
            out.append(data if start == 0 and end == len(data) else data[start:end])
        return out

    def _parse_header(self, data: bytes, pos: int) -> tuple[int, int, int] | None:
        """``(position after the header, opcode, payload length)``, or None if incomplete."""
        available = len(data) - pos
        if available < 2:
            return None
        first, second = data[pos], data[pos + 1]
        length = second & 0x7F
        masked = second & 0x80
        needed = 2 + (2 if length == 126 else 8 if length == 127 else 0) + (4 if masked else 0)
        if available < needed:
            return None
        if length == 126:
            length = struct.unpack_from("!H", data, pos + 2)[0]
        elif length == 127:
            length = struct.unpack_from("!Q", data, pos + 2)[0]
        self._check(first, second, length)
        opcode = first & 0x0F
        if opcode == CLOSE:
            self._key = data[pos + needed - 4 : pos + needed] if masked else b""
        return pos + needed, opcode, length

    def _check(self, first: int, second: int, length: int) -> None:
        opcode = first & 0x0F
        fin = first & 0x80
        if first & 0x70:
            raise Violation(PROTOCOL_ERROR, "reserved bits set (no extension was negotiated)")
        if opcode not in _KNOWN:
            raise Violation(PROTOCOL_ERROR, f"unknown opcode {opcode:#x}")
        if bool(second & 0x80) != self._masked:
            raise Violation(
                PROTOCOL_ERROR, "unmasked client frame" if self._masked else "masked server frame"
            )
        if opcode >= CLOSE:
            if not fin or length > 125:
                raise Violation(PROTOCOL_ERROR, "fragmented or over-long control frame")
            return
        if opcode == CONTINUATION:
            if not self._in_message:
                raise Violation(PROTOCOL_ERROR, "continuation frame outside a message")
            self._message_size += length
        else:
            if self._in_message:
                raise Violation(PROTOCOL_ERROR, "new message before the last one ended")
            self._message_size = length
        if self._message_size > self._limit:
            raise Violation(MESSAGE_TOO_BIG, "message too big")
        self._in_message = not fin

    def _finish_close(self) -> None:
        payload = bytes(self._closing or b"")
        self._closing = None
        if self._key:
            payload = _unmask(self._key, payload)
        try:
            self.closed = parse_close(payload)
        except Violation as violation:
            self.violation = violation
