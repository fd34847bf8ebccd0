"""OTLP requests decoded straight from protobuf wire bytes, for the detection stage's speed.

`vigil.otlp` decodes through the protobuf runtime: correct, but a data point's attributes
cost some ten wrapper objects, so it decodes about 100,000 samples a second. Here the
bytes are walked directly, and what repeats is decoded once: the encoded attributes of a
data point (or log record) are a cache key, so a series' labels are parsed the first time
they are seen and then looked up. A data point in the usual layout (time, value,
attributes) takes one struct unpack and one dict lookup.

Results are the same as `vigil.otlp`'s (the tests compare them on generated and foreign
payloads): the same samples and lines, the same `CodecError` for what is not a request of
the right kind. Anything irregular (a cache miss, an integer value, exemplars, a non-string
body) takes the protobuf runtime's path for that piece only.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Final

import numpy as np
from google.protobuf.message import DecodeError
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AGGREGATION_TEMPORALITY_CUMULATIVE,
    DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK,
    NumberDataPoint,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from vigil.frames import SERIES, MetricFrame, SeriesTable
from vigil.otlp import CodecError, LogBatch, LogLine, MetricKind, _any_to_str, _attributes

_FIXED64: Final = struct.Struct("<Q").unpack_from
_SFIXED64: Final = struct.Struct("<q").unpack_from
_DOUBLE: Final = struct.Struct("<d").unpack_from
_TIME_VALUE: Final = struct.Struct("<xQxd").unpack_from  # 0x19 time, 0x21 value
_SKIP_POINT: Final = -1  # cache entry of a point to drop (staleness marker)
_CACHE_LIMIT: Final = 200_000  # encoded label sets remembered; cleared when passed
# What walking a damaged payload raises (it reads past an end, or bytes that are no UTF-8).
_MALFORMED: Final = (IndexError, struct.error, UnicodeDecodeError, DecodeError)


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise CodecError("varint longer than 10 bytes")


def _length(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """A length-delimited field's (start, end) from the position of its length."""
    size = buf[pos]
    if size < 0x80:
        start = pos + 1
    elif buf[pos + 1] < 0x80:
        size = (size & 0x7F) | (buf[pos + 1] << 7)
        start = pos + 2
    else:
        size, start = _varint(buf, pos)
    stop = start + size
    if stop > end:
        raise CodecError("field runs past the end of its message: truncated payload")
    return start, stop


def _skip(buf: bytes, pos: int, tag: int, end: int) -> int:
    """Skip an unknown field whose first tag byte (`tag`) was read; `pos` follows it."""
    if tag & 0x80:  # a field number above 15: the tag goes on
        _, pos = _varint(buf, pos)
    wire = tag & 7
    if wire == 0:
        _, pos = _varint(buf, pos)
    elif wire == 1:
        pos += 8
    elif wire == 5:
        pos += 4
    elif wire == 2:
        pos = _length(buf, pos, end)[1]
    else:
        raise CodecError(f"unsupported protobuf wire type {wire}")
    if pos > end:
        raise CodecError("field runs past the end of its message: truncated payload")
    return pos


def _fields(buf: bytes, start: int, end: int, wanted: int) -> list[tuple[int, int]]:
    """(start, end) of each occurrence of length-delimited field `wanted` in a message."""
    found = []
    pos = start
    while pos < end:
        tag = buf[pos]
        pos += 1
        if tag == wanted:
            begin, pos = _length(buf, pos, end)
            found.append((begin, pos))
        else:
            pos = _skip(buf, pos, tag, end)
    return found


class MetricsDecoder:
    """Decodes metrics requests into `MetricFrame`s, numbering series in `table`."""

    def __init__(self, table: SeriesTable | None = None) -> None:
        self.table = SERIES if table is None else table
        self._resources: dict[bytes, dict[str, str]] = {}
        # (resource bytes, metric name, kind) -> encoded point attributes -> series id
        self._series: dict[tuple[bytes, str, MetricKind], dict[bytes, int]] = {}

    def decode(self, payload: bytes) -> MetricFrame:
        try:
            return self._decode(bytes(payload))
        except _MALFORMED as exc:
            raise CodecError(f"payload is not OTLP protobuf metrics: {exc}") from exc

    def _decode(self, buf: bytes) -> MetricFrame:
        if len(self._resources) > _CACHE_LIMIT or len(self._series) > _CACHE_LIMIT:
            self._resources.clear()
            self._series.clear()
        rows = _Rows(buf)
        resources = _fields(buf, 0, len(buf), 0x0A)
        if not resources:
            raise CodecError("no resource_metrics in payload: not an OTLP metrics request")
        for start, end in resources:
            resource_key = b"".join(buf[a:b] for a, b in _fields(buf, start, end, 0x0A))
            resource = self._resource(resource_key)
            for scope_start, scope_end in _fields(buf, start, end, 0x12):
                for m_start, m_end in _fields(buf, scope_start, scope_end, 0x12):
                    self._metric(buf, m_start, m_end, resource_key, resource, rows)
        return rows.frame(self.table)

    def _resource(self, key: bytes) -> dict[str, str]:
        found = self._resources.get(key)
        if found is None:
            found = self._resources[key] = _attributes(Resource.FromString(key).attributes)
        return found

    def _metric(self, buf: bytes, start: int, end: int, resource_key: bytes,
                resource: Mapping[str, str], rows: _Rows) -> None:
        name = ""
        data: tuple[int, int, int] | None = None  # (field tag, start, end): the last one wins
        pos = start
        while pos < end:
            tag = buf[pos]
            pos += 1
            if tag == 0x0A:
                a, pos = _length(buf, pos, end)
                name = buf[a:pos].decode()
            elif tag in (0x2A, 0x3A, 0x4A, 0x52, 0x5A):  # gauge, sum, other data kinds
                a, pos = _length(buf, pos, end)
                data = (tag, a, pos)
            else:
                pos = _skip(buf, pos, tag, end)
        # A logs payload parses as metrics with no names (see vigil.otlp._samples).
        if not name:
            raise CodecError("metric without a name: not an OTLP metrics request (logs?)")
        if data is None or data[0] not in (0x2A, 0x3A):
            return  # histograms and summaries: Vigil's detectors do not use them
        tag, d_start, d_end = data
        keys: list[bytes] = []
        offsets = rows.offsets
        first = len(offsets)
        monotonic, temporality = False, 0
        pos = d_start
        while pos < d_end:
            field = buf[pos]
            if field == 0x0A:
                size = buf[pos + 1]
                if size < 0x80:
                    p = pos + 2
                elif buf[pos + 2] < 0x80:  # two bytes: a point with a few long labels
                    size = (size & 0x7F) | (buf[pos + 2] << 7)
                    p = pos + 3
                else:
                    size, p = _varint(buf, pos + 1)
                pos = p + size
                if pos > d_end:
                    raise CodecError("data point runs past its end: truncated payload")
                # The usual layout, fields in number order: time, as_double, attributes...
                if (size >= 18 and buf[p] == 0x19 and buf[p + 9] == 0x21
                        and (size == 18 or buf[p + 18] == 0x3A)):
                    keys.append(buf[p + 18:pos])
                    offsets.append(p + 1)
                else:
                    key, t, v = _irregular_point(buf, p, pos)
                    keys.append(key)
                    rows.add_explicit(t, v)
            elif field == 0x10 and tag == 0x3A:
                temporality, pos = _varint(buf, pos + 1)
            elif field == 0x18 and tag == 0x3A:
                flag, pos = _varint(buf, pos + 1)
                monotonic = flag != 0
            else:
                pos = _skip(buf, pos + 1, field, d_end)
        kind: MetricKind = "gauge"
        if tag == 0x3A and monotonic and temporality == AGGREGATION_TEMPORALITY_CUMULATIVE:
            kind = "counter"
        series = self._series.setdefault((resource_key, name, kind), {})
        found = list(map(series.get, keys))  # the hot path: one C-level lookup per point
        if None in found:
            for i, sid in enumerate(found):
                if sid is None:
                    found[i] = self._first_sight(resource, name, kind, keys[i], series,
                                                 rows, first + i)
        rows.sids.extend(found)  # type: ignore[arg-type]  # no None is left

    def _first_sight(self, resource: Mapping[str, str], name: str, kind: MetricKind,
                     key: bytes, series: dict[bytes, int], rows: _Rows, row: int) -> int:
        """Parse a point's key bytes; remember its series unless the key was irregular."""
        point = NumberDataPoint.FromString(key)
        # Points flagged "no recorded value" are staleness markers (e.g. Prometheus receiver).
        if point.flags & DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK:
            sid = _SKIP_POINT
        else:
            sid = self.table.intern(resource, name, kind, _attributes(point.attributes))
        # Encoders write fields in number order, so the bytes after the value are attributes
        # and flags. An encoder that did not may repeat time or value there, and protobuf's
        # rule is that the last one counts: take them, and do not cache such a key.
        if {f.name for f, _ in point.ListFields()} <= {"attributes", "flags"}:
            series[key] = sid
            return sid
        t, v = rows.time_value(row)
        number = point.WhichOneof("value")
        if number is not None:
            v = point.as_double if number == "as_double" else float(point.as_int)
        rows.replace(row, point.time_unix_nano or t, v)
        return sid


class _Rows:
    """A request's samples while it is walked: series ids and where each time+value lies.

    A point in the usual layout is an offset into the payload (its time, then 9 bytes on,
    its value), read for all rows at once with numpy; any other point's time and value are
    kept explicitly, under a negative offset.
    """

    __slots__ = ("buf", "explicit", "offsets", "sids")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.sids: list[int] = []
        self.offsets: list[int] = []
        self.explicit: list[tuple[int, float | None]] = []

    def add_explicit(self, t: int, v: float | None) -> None:
        self.offsets.append(-1 - len(self.explicit))
        self.explicit.append((t, v))

    def time_value(self, row: int) -> tuple[int, float | None]:
        offset = self.offsets[row]
        if offset < 0:
            return self.explicit[-1 - offset]
        return _FIXED64(self.buf, offset)[0], _DOUBLE(self.buf, offset + 9)[0]

    def replace(self, row: int, t: int, v: float | None) -> None:
        offset = self.offsets[row]
        if offset < 0:
            self.explicit[-1 - offset] = (t, v)
        else:
            self.offsets[row] = -1 - len(self.explicit)
            self.explicit.append((t, v))

    def frame(self, table: SeriesTable) -> MetricFrame:
        sids = np.asarray(self.sids, dtype=np.int64)
        offsets = np.asarray(self.offsets, dtype=np.int64)
        nanos = np.zeros(len(sids), dtype=np.uint64)
        values = np.full(len(sids), np.nan)
        usual = offsets >= 0
        if usual.any():
            raw = np.frombuffer(self.buf, dtype=np.uint8)
            at = offsets[usual][:, None] + np.arange(8)
            nanos[usual] = raw[at].view("<u8").ravel()
            values[usual] = raw[at + 9].view("<f8").ravel()
        keep = sids >= 0
        if not usual.all():
            for row in np.flatnonzero(~usual).tolist():
                t, v = self.explicit[-1 - int(offsets[row])]
                nanos[row] = t
                if v is None:
                    keep[row] = False  # a point without a value carries nothing
                else:
                    values[row] = v
        return MetricFrame(table, sids[keep], nanos[keep] / 1e9, values[keep])


def _irregular_point(buf: bytes, start: int, end: int) -> tuple[bytes, int, float | None]:
    """A data point in any other layout: its attributes + flags bytes, time and value."""
    t = 0
    value: float | None = None
    key: list[bytes] = []
    pos = start
    while pos < end:
        tag = buf[pos]
        pos += 1
        if tag == 0x19:
            t = _FIXED64(buf, pos)[0]
            pos += 8
        elif tag == 0x21:
            value = _DOUBLE(buf, pos)[0]
            pos += 8
        elif tag == 0x31:
            value = float(_SFIXED64(buf, pos)[0])
            pos += 8
        elif tag in (0x3A, 0x40):  # attributes and flags: what identifies the series
            field_start = pos - 1
            pos = _skip(buf, pos, tag, end)
            key.append(buf[field_start:pos])
        else:
            pos = _skip(buf, pos, tag, end)
    if pos > end:
        raise CodecError("data point runs past its end: truncated payload")
    return b"".join(key), t, value


class LogsDecoder:
    """Decodes logs requests into `LogBatch`es, parsing each distinct attribute set once."""

    def __init__(self) -> None:
        self._resources: dict[bytes, dict[str, str]] = {}
        self._attributes: dict[bytes, dict[str, str]] = {}

    def decode(self, payload: bytes) -> list[LogBatch]:
        try:
            return self._decode(bytes(payload))
        except _MALFORMED as exc:
            raise CodecError(f"payload is not OTLP protobuf logs: {exc}") from exc

    def _decode(self, buf: bytes) -> list[LogBatch]:
        if len(self._resources) > _CACHE_LIMIT or len(self._attributes) > _CACHE_LIMIT:
            self._resources.clear()
            self._attributes.clear()
        resources = _fields(buf, 0, len(buf), 0x0A)
        if not resources:
            raise CodecError("no resource_logs in payload: not an OTLP logs request")
        batches = []
        for start, end in resources:
            key = b"".join(buf[a:b] for a, b in _fields(buf, start, end, 0x0A))
            resource = self._resources.get(key)
            if resource is None:
                resource = self._resources[key] = _attributes(
                    Resource.FromString(key).attributes)
            lines: list[LogLine] = []
            for scope_start, scope_end in _fields(buf, start, end, 0x12):
                self._records(buf, scope_start, scope_end, lines)
            batches.append(LogBatch(resource=resource, lines=lines))
        return batches

    def _records(self, buf: bytes, start: int, end: int, lines: list[LogLine]) -> None:
        """The log records of one ScopeLogs, appended to `lines`; one flat loop for speed."""
        pos = start
        while pos < end:
            tag = buf[pos]
            if tag != 0x12:  # scope, schema url, unknown fields
                pos = _skip(buf, pos + 1, tag, end)
                continue
            p, stop = _length(buf, pos + 1, end)
            pos = stop
            nanos = observed = 0
            body = severity = ""
            keys: list[bytes] = []
            first = last = -1  # the run of attribute fields, usually one contiguous slice
            while p < stop:
                tag = buf[p]
                p += 1
                if tag == 0x09:
                    nanos = _FIXED64(buf, p)[0]
                    p += 8
                elif tag == 0x2A:
                    q, p = _length(buf, p, stop)
                    # A string body: AnyValue field 1 filling the whole value, read here.
                    size = buf[q + 1] if p - q >= 2 and buf[q] == 0x0A else 0x80
                    if size < 0x80 and q + 2 + size == p:
                        body = buf[q + 2:p].decode()
                    else:
                        body = _body(buf, q, p)
                elif tag == 0x32:
                    field_start = p - 1
                    size = buf[p]
                    p = p + 1 + size if size < 0x80 else _length(buf, p, stop)[1]
                    if first < 0:
                        first = field_start
                    elif field_start != last:  # attributes with other fields between them
                        keys.append(buf[first:last])
                        first = field_start
                    last = p
                elif tag == 0x59:
                    observed = _FIXED64(buf, p)[0]
                    p += 8
                elif tag == 0x1A:
                    q, p = _length(buf, p, stop)
                    severity = buf[q:p].decode()
                else:
                    p = _skip(buf, p, tag, stop)
            if p > stop:
                raise CodecError("log record runs past its end: truncated payload")
            nanos = nanos or observed
            # A metrics payload parses as logs too, but never sets either timestamp.
            if not nanos:
                raise CodecError("log record without a timestamp: not an OTLP logs request "
                                 "(metrics?)")
            if first >= 0:
                keys.append(buf[first:last])
            encoded = keys[0] if len(keys) == 1 else b"".join(keys)
            attributes = self._attributes.get(encoded)
            if attributes is None:
                attributes = self._attributes[encoded] = _attributes(
                    LogRecord.FromString(encoded).attributes)
            lines.append(LogLine(body, nanos / 1_000_000_000, attributes, severity))


def _body(buf: bytes, start: int, end: int) -> str:
    """An AnyValue body: a lone string field read directly, anything else by the runtime."""
    if end > start and buf[start] == 0x0A:
        a, stop = _length(buf, start + 1, end)
        if stop == end:
            return buf[a:stop].decode()
    return _any_to_str(AnyValue.FromString(buf[start:end]))
