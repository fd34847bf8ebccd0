"""The spool's record: one Kafka message, and its length-prefixed, CRC-checked frame on disk.

A frame is the payload's length and CRC32 (little-endian, 4 bytes each), then the payload:
the topic, the key (length -1 for none) and each header, every one preceded by its length,
and last the value, which runs to the end of the payload.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO

FRAME = struct.Struct("<II")  # payload length, CRC32 of the payload
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
# What Python spends on a queued message besides its bytes: the objects, the queue's slot.
_OBJECT_OVERHEAD = 256


@dataclass(frozen=True, slots=True)
class Message:
    """One Kafka message as a collector published it."""

    topic: str
    value: bytes
    key: str | None = None
    headers: tuple[tuple[str, bytes], ...] = ()

    @property
    def size(self) -> int:
        """Bytes it takes queued in memory, near enough to bound queues by."""
        return (len(self.value) + len(self.topic) + (len(self.key) if self.key else 0)
                + sum(len(name) + len(value) + 64 for name, value in self.headers)
                + _OBJECT_OVERHEAD)


def encode_frame(message: Message) -> bytes:
    """Length, CRC32, then topic, key, headers and value, each with its length."""
    parts = [_U16.pack(len(topic := message.topic.encode())), topic]
    if message.key is None:
        parts.append(_I32.pack(-1))
    else:
        key = message.key.encode()
        parts += [_I32.pack(len(key)), key]
    parts.append(_U16.pack(len(message.headers)))
    for name, value in message.headers:
        encoded = name.encode()
        parts += [_U16.pack(len(encoded)), encoded, _U32.pack(len(value)), value]
    parts.append(message.value)  # the rest of the payload
    payload = b"".join(parts)
    return FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def decode_payload(payload: bytes) -> Message:
    """The inverse of `encode_frame` for a payload whose CRC has been checked."""
    view = memoryview(payload)
    (size,), at = _U16.unpack_from(view), _U16.size
    topic = bytes(view[at:at + size]).decode()
    at += size
    (size,) = _I32.unpack_from(view, at)
    at += _I32.size
    key = None
    if size >= 0:
        key = bytes(view[at:at + size]).decode()
        at += size
    (count,) = _U16.unpack_from(view, at)
    at += _U16.size
    headers = []
    for _ in range(count):
        (size,) = _U16.unpack_from(view, at)
        name = bytes(view[at + 2:at + 2 + size]).decode()
        at += 2 + size
        (size,) = _U32.unpack_from(view, at)
        headers.append((name, bytes(view[at + 4:at + 4 + size])))
        at += 4 + size
    return Message(topic, bytes(view[at:]), key, tuple(headers))


def read_frame(source: BinaryIO, remaining: int) -> bytes | None:
    """The next record's payload from `source`, which holds `remaining` more bytes; None if
    the record is torn (short) or fails its CRC."""
    header = source.read(FRAME.size)
    if len(header) < FRAME.size:
        return None
    length, crc = FRAME.unpack(header)
    if length > remaining - FRAME.size:  # a damaged length must not make us read gigabytes
        return None
    payload = source.read(length)
    if len(payload) < length or zlib.crc32(payload) != crc:
        return None
    return payload
