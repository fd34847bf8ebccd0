"""Tests for cutting byte streams into lines: offsets, over-long lines, binary junk."""

from __future__ import annotations

import pytest
from vigil.collectors.log_lines import LineSplitter, NotText, Rejected, decode_line


def _feed_all(splitter: LineSplitter, chunks: list[bytes]) -> tuple[list[tuple[int, bytes]],
                                                                   list[Rejected]]:
    lines: list[tuple[int, bytes]] = []
    rejected: list[Rejected] = []
    for chunk in chunks:
        got, bad = splitter.feed(chunk)
        lines += got
        rejected += bad
    return lines, rejected


def test_lines_carry_their_start_offsets_across_chunks() -> None:
    splitter = LineSplitter(100, offset=1000)

    lines, rejected = _feed_all(splitter, [b"ab", b"c\nde", b"f\n\ng", b"h"])

    assert lines == [(1000, b"abc"), (1004, b"def"), (1008, b"")]
    assert rejected == []
    assert splitter.consumed == 1009  # "gh" is not a line yet: resume at its first byte


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 1 << 20])
def test_an_over_long_line_is_skipped_and_its_neighbours_kept(chunk_size: int) -> None:
    data = b"before\n" + b"x" * 1000 + b"\nafter\n"
    splitter = LineSplitter(max_line_bytes=100)

    lines, rejected = _feed_all(
        splitter, [data[i:i + chunk_size] for i in range(0, len(data), chunk_size)])

    assert lines == [(0, b"before"), (1008, b"after")]
    assert len(rejected) == 1
    assert rejected[0].offset == 7
    assert rejected[0].length > 100
    assert "max_line_bytes (100)" in rejected[0].reason
    assert splitter.consumed == len(data)


def test_an_over_long_line_is_not_held_while_it_grows() -> None:
    splitter = LineSplitter(max_line_bytes=100)
    splitter.feed(b"y" * 150)  # passes the limit without a newline: reported, then dropped

    for _ in range(1000):
        assert splitter.feed(b"y" * 1000) == ([], [])
        assert splitter.discarding
    assert splitter.consumed == 0  # a restart would skip the whole line again, not half of it
    lines, _ = splitter.feed(b"yyy\nnext\n")
    assert lines == [(1_000_154, b"next")]


def test_a_line_exactly_at_the_limit_is_kept() -> None:
    lines, rejected = LineSplitter(max_line_bytes=5).feed(b"12345\n123456\n")
    assert lines == [(0, b"12345")]
    assert [r.offset for r in rejected] == [6]


def test_finish_returns_the_unterminated_last_line() -> None:
    splitter = LineSplitter(100)
    splitter.feed(b"one\ntw")
    assert splitter.finish() == (4, b"tw")
    assert splitter.consumed == 6
    assert splitter.finish() is None


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b"plain ascii", "plain ascii"),
        ("caf\u00e9 \u2713".encode(), "caf\u00e9 \u2713"),
        (b"user Fl\xe4sh logged in", "user Fl\ufffdsh logged in"),  # one stray Latin-1 byte
        (b"", ""),
    ],
)
def test_decode_line_keeps_text_with_a_few_bad_bytes(raw: bytes, text: str) -> None:
    assert decode_line(raw) == text


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"abc\x00def", "NUL"),
        (bytes(range(128, 256)), "invalid UTF-8"),
        (b"\x89PNG\r\n\x1a\x00\x00\x00\rIHDR", "NUL"),
        (b"\xff\xfe\xfa\xfb ok \xc0\xc1", "invalid UTF-8"),
    ],
)
def test_decode_line_refuses_binary_junk(raw: bytes, why: str) -> None:
    with pytest.raises(NotText, match=why):
        decode_line(raw)


def test_decode_line_can_skip_the_nul_search() -> None:
    assert decode_line(b"a\x00b", may_hold_nul=False) == "a\x00b"
