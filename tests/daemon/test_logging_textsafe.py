"""pypluto.textsafe.escape: the one function every log line and whack field goes through."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pypluto.daemon.logger import PlutoLogger
from pypluto.textsafe import DEFAULT_LIMIT, escape, guard, is_clean


def test_controls_become_visible_escapes() -> None:
    assert escape("a\nb\rc\td") == "a\\nb\\rc\\td"
    assert escape("\x1b[31mred\x00") == "\\x1b[31mred\\x00"
    assert escape("del\x7f c1\x85\x9b") == "del\\x7f c1\\u0085\\u009b"
    assert escape("back\\slash") == "back\\\\slash"
    assert escape("plain text @west.example") == "plain text @west.example"


def test_bidi_and_invisible_unicode_escaped_letters_kept() -> None:
    assert escape("abc\u202edcba\u2066x\u2069") == "abc\\u202edcba\\u2066x\\u2069"
    assert escape("line\u2028sep\u200bzw\ufeff") == "line\\u2028sep\\u200bzw\\ufeff"
    assert escape("Zürich ✓ 東京") == "Zürich ✓ 東京"
    assert escape("tag\U000e0041") == "tag\\U000e0041"


def test_bytes_decoded_bad_utf8_as_hex() -> None:
    assert escape(b"ok\xff\xfe\n") == "ok\\xff\\xfe\\n"
    assert escape(bytearray(b"caf\xc3\xa9")) == "café"
    assert escape(memoryview(b"\x00")) == "\\x00"
    assert escape(12) == "12"


def test_length_bounded_with_a_mark_never_mid_escape() -> None:
    s = escape("A" * 4096)
    assert s == "A" * DEFAULT_LIMIT + "...[4096 chars]"
    s = escape("A" * 255 + "\x1b" * 3, limit=256)
    assert s == "A" * 255 + "...[267 chars]"  # \x1b (4 chars) does not fit: not cut in half
    assert escape("x" * 10, limit=0) == "x" * 10


def test_guard_leaves_escaped_lines_alone_and_catches_raw_ones() -> None:
    field = escape("a\nb\\c")
    line = f"id='{field}'"
    assert is_clean(line) and guard(line) == line
    assert guard("raw\nline") == "raw\\nline"
    assert not is_clean("bidi\u202e") and guard("bidi\u202e") == "bidi\\u202e"


@given(st.one_of(st.text(max_size=600), st.binary(max_size=600)))
def test_any_input_gives_one_clean_bounded_line(value: str | bytes) -> None:
    out = escape(value)
    assert "\n" not in out and "\r" not in out
    assert is_clean(out, limit=0)
    assert len(out) <= DEFAULT_LIMIT + len("...[99999 chars]")


_pieces = st.sampled_from(["\\", "n", "x", "u", "0", "1b", "\n", "\x1b", "\x00", "\u0080",
                           "\x80", "\udc80", "\u202e", "a"])


@given(st.lists(_pieces, max_size=12), st.lists(_pieces, max_size=12), st.booleans())
def test_escaping_is_injective(a: list[str], b: list[str], as_bytes: bool) -> None:
    """Distinct inputs stay distinct: a backslash in the input cannot fake an escape."""
    sa, sb = "".join(a), "".join(b)
    if as_bytes:
        ba = sa.encode("utf-8", "surrogateescape")
        bb = sb.encode("utf-8", "surrogateescape")
        assert (escape(ba, limit=0) == escape(bb, limit=0)) == (ba == bb)
    else:
        assert (escape(sa, limit=0) == escape(sb, limit=0)) == (sa == sb)
    assert escape("\\n", limit=0) != escape("\n", limit=0)
    assert escape(b"\xc2\x80") != escape(b"\x80")


def test_logger_lines_one_per_event(tmp_path) -> None:
    log = PlutoLogger(logfile=str(tmp_path / "l"), logtime=True, debug={"base"})
    log.log("peer said: hi\nFeb 30 00:00:00.000000: forged", conn="c", serial=2)
    log.log("multi\nline debug", "debug")
    log.log("oops\x00", "error")
    log.audit_event('op=start conn="c\nx" res=success')
    log.close()
    lines = (tmp_path / "l").read_text().splitlines()
    assert len(lines) == 4
    assert lines[0].endswith('"c" #2: peer said: hi\\nFeb 30 00:00:00.000000: forged')
    assert lines[1].endswith("| multi\\nline debug")
    assert lines[2].endswith("ERROR: oops\\x00")
    assert lines[3].endswith('AUDIT: op=start conn="c\\nx" res=success')


def test_logger_escapes_what_whack_sees(tmp_path) -> None:
    seen: list[str] = []
    log = PlutoLogger(logfile=str(tmp_path / "l"), logtime=False)
    log.capture = seen.append
    log.log("id '\x1b]0;pwned\x07'")
    log.close()
    assert seen == ["id '\\x1b]0;pwned\\x07'"]
