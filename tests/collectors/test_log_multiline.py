"""Tests for multi-line records: Python tracebacks and chains, indented lines, NCCL error chains."""

from __future__ import annotations

from pathlib import Path

import pytest
from vigil.collectors.log_multiline import Joiner, Record, rules_named

DATA = Path(__file__).parent / "data"
NOW = 1_718_000_060.0


def _lines(text: str, first_offset: int = 0) -> list[tuple[int, str]]:
    out, offset = [], first_offset
    for line in text.split("\n"):
        out.append((offset, line))
        offset += len(line.encode()) + 1
    return out


def _join(text: str, *rules: str) -> list[str]:
    joiner = Joiner(rules_named(rules))
    records = joiner.feed(_lines(text), NOW) + joiner.flush()
    return [r.text for r in records]


def test_the_training_log_fixture_comes_out_as_whole_records() -> None:
    text = (DATA / "logs_training_errors.log").read_text().rstrip("\n")

    records = _join(text, "python", "nccl")

    assert [r.split("\n")[0][:40] for r in records] == [
        "2024-06-10T06:13:20.500Z step 1200 loss ",
        "2024-06-10T06:13:21.100Z rank 3 loading ",
        "Traceback (most recent call last):",
        "2024-06-10T06:13:22.000Z rank 3 exiting ",
        "gpu-a-017:2712:3905 [3] transport/net_ib",
        "gpu-a-017:2713:3911 [4] NCCL INFO Channe",
        "[rank3]: Traceback (most recent call las",
        "[rank4]: Traceback (most recent call las",
        "  + Exception Group Traceback (most rece",
        "2024-06-10T06:13:40.000Z launcher: resta",
    ]
    lines = text.split("\n")
    chain = records[2].split("\n")
    # Three tracebacks, the two sentences linking them and the blank lines around those.
    last = next(i for i, line in enumerate(lines) if line.startswith("RuntimeError: [enforce"))
    assert chain == lines[2:last + 1]
    assert "The above exception was the direct cause of the following exception:" in chain
    assert "During handling of the above exception, another exception occurred:" in chain
    nccl = records[4].split("\n")
    assert len(nccl) == 4 and nccl[-1].endswith("proxy.cc:878 -> 6 [Progress Thread]")
    torch = records[6].split("\n")
    assert torch[-3:] == [
        "[rank3]: ncclRemoteError: A call failed possibly due to a network error or a remote "
        "process exiting prematurely.",
        "[rank3]: Last error:",
        "[rank3]: NET/IB : Got completion from peer 10.20.1.18<54862> with status=12 opcode=0 "
        "len=0 vendor err 129 (Recv) localGid ::ffff:10.20.1.17 remoteGids::ffff:10.20.1.18",
    ]
    assert len(records[7].split("\n")) == 4
    assert records[8].split("\n")[-1] == "    +------------------------------------"


def test_a_traceback_ends_at_its_exception_line_when_another_line_follows() -> None:
    text = ("Traceback (most recent call last):\n"
            '  File "x.py", line 1, in <module>\n'
            "ZeroDivisionError: division by zero\n"
            "next log line")

    assert _join(text, "python") == [
        'Traceback (most recent call last):\n  File "x.py", line 1, in <module>\n'
        "ZeroDivisionError: division by zero",
        "next log line",
    ]


def test_blank_lines_after_a_traceback_are_not_part_of_it() -> None:
    text = ("Traceback (most recent call last):\n"
            '  File "x.py", line 1, in <module>\n'
            "KeyError: 'x'\n\n\nnext")

    assert _join(text, "python") == [
        "Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\nKeyError: 'x'",
        "next",
    ]


def test_a_prefixed_traceback_ends_where_the_prefix_changes() -> None:
    text = ("[rank0]: Traceback (most recent call last):\n"
            "[rank0]:   File \"t.py\", line 3, in <module>\n"
            "[rank1]: unrelated output of another rank\n"
            "[rank0]: ValueError: late")

    records = _join(text, "python")

    assert records[0].count("\n") == 1
    assert records[1:] == ["[rank1]: unrelated output of another rank", "[rank0]: ValueError: late"]


def test_a_header_mid_line_is_not_a_traceback() -> None:
    text = "saw 'Traceback (most recent call last): boom' in the output\n  indented"
    assert _join(text, "python") == [
        "saw 'Traceback (most recent call last): boom' in the output", "  indented"]


def test_indent_joins_lines_that_start_with_whitespace() -> None:
    text = ("java.lang.IllegalStateException: bad\n"
            "\tat a.b.C.run(C.java:10)\n"
            "\tat a.b.D.main(D.java:3)\n"
            "next\n"
            "  orphan continuation joins next\n"
            "\n"
            "last")

    assert _join(text, "indent") == [
        "java.lang.IllegalStateException: bad\n\tat a.b.C.run(C.java:10)\n"
        "\tat a.b.D.main(D.java:3)",
        "next\n  orphan continuation joins next",
        "last",
    ]


def test_an_nccl_chain_ends_at_another_thread_or_another_kind_of_line() -> None:
    warn = "h:1:2 [0] misc/socket.cc:483 NCCL WARN socketStartConnect: Connect failed"
    text = "\n".join([
        warn,
        "h:1:2 [0] NCCL INFO misc/socket.cc:564 -> 2",
        "h:1:9 [0] NCCL INFO bootstrap.cc:270 -> 2",  # another thread
        "h:1:2 [0] NCCL INFO bootstrap.cc:270 -> 2",  # no WARN above it now: a line of its own
    ])

    assert _join(text, "nccl") == [
        warn + "\nh:1:2 [0] NCCL INFO misc/socket.cc:564 -> 2",
        "h:1:9 [0] NCCL INFO bootstrap.cc:270 -> 2",
        "h:1:2 [0] NCCL INFO bootstrap.cc:270 -> 2",
    ]


def test_an_nccl_warning_without_a_file_location_starts_a_chain() -> None:
    text = "h:1:2 [0] NCCL WARN Cuda failure 'out of memory'\nh:1:2 [0] NCCL INFO init.cc:1350 -> 1"
    assert len(_join(text, "nccl")) == 1


def test_without_rules_every_line_is_a_record_and_blank_lines_go() -> None:
    assert _join("a\n\n  b\nTraceback (most recent call last):") == [
        "a", "  b", "Traceback (most recent call last):"]


def test_the_first_rule_that_matches_wins() -> None:
    text = "Traceback (most recent call last):\n  File \"x\"\nKeyError: 1\n  indented"
    assert _join(text, "python", "indent") == [
        "Traceback (most recent call last):\n  File \"x\"\nKeyError: 1", "  indented"]
    assert _join(text, "indent", "python") == [  # indent claims the header as a plain line
        "Traceback (most recent call last):\n  File \"x\"", "KeyError: 1\n  indented"]


def test_records_carry_the_offset_and_time_of_their_first_line() -> None:
    joiner = Joiner(rules_named(["indent"]))
    first = joiner.feed(_lines("a\n  b", first_offset=100), NOW)
    assert first == [] and joiner.pending_start == 100

    second = joiner.feed([(106, "c")], NOW + 5)

    assert second == [Record("a\n  b", 100, NOW)]
    assert joiner.pending_start == 106


def test_an_open_record_is_flushed_after_the_timeout() -> None:
    joiner = Joiner(rules_named(["python"]), flush_after_s=1.0)
    joiner.feed(_lines("Traceback (most recent call last):\n  File \"x\"\nKeyError: 1"), NOW)

    assert joiner.flush_idle(NOW + 0.5) == []
    (record,) = joiner.flush_idle(NOW + 1.0)
    assert record.text.endswith("KeyError: 1")
    assert joiner.pending_start is None
    assert joiner.flush_idle(NOW + 9) == []


def test_a_tentative_blank_line_does_not_count_as_activity_forever() -> None:
    joiner = Joiner(rules_named(["python"]), flush_after_s=1.0)
    joiner.feed(_lines("Traceback (most recent call last):\n  File \"x\"\nKeyError: 1"), NOW)
    joiner.feed([(80, "")], NOW + 0.9)

    (record,) = joiner.flush_idle(NOW + 2.0)
    assert record.text.endswith("KeyError: 1")  # the blank line went with the chain that never came


def test_a_record_over_the_size_limit_is_cut() -> None:
    joiner = Joiner(rules_named(["indent"]), max_record_chars=50)
    lines = [(0, "head")] + [(i, f"  continuation {i:03d}") for i in range(1, 10)]

    records = joiner.feed(lines, NOW) + joiner.flush()

    assert all(len(r.text) <= 50 + 20 for r in records)
    assert "\n".join(r.text for r in records) == "\n".join(text for _, text in lines)


def test_unknown_rule_names_are_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"'java'.*known: indent, nccl, python"):
        rules_named(["python", "java"])
