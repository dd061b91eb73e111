"""Red team 25: ipsec.conf / ipsec.secrets values against Libreswan 5.2's own rules.

Each value is read through the parser (real ``ipsec.conf`` / ``ipsec.secrets`` text)
and compared with what Libreswan 5.2's addconn (lib/libipsecconf/parser.y, confread.c)
and pluto (programs/pluto/connections.c, lib/libswan/secrets.c, lex.c) do with it.
Facts about Libreswan are restated here, not copied.

Where 5.2 *ignores* a malformed value with a warning ("..., keyword ignored", then the
default is used), pypluto refuses the file instead (enforce or refuse, never ignore).

Checked and already right (rows at the end): ikelifetime=/ipsec-lifetime= above 24h
clamped with Libreswan's warning; leftprotoport= forms (``tcp/%any``, ``17/0``,
``icmp/8``, a service name); leftsubnets={a b} pairs; sendca= in any case; mark=
forms (``-1``, ``0x1/0xffffffff``); hostaddrfamily= against the hosts; IPv4/IPv6 mixes
of left= and right=; ``conn %default`` after the conns; ``%any``/``%any6`` secrets
indices; quoted, ``0x`` (with ``_``), ``0s`` secrets.

Kept on purpose, where Libreswan 5.2 differs:

- ``ikelifetime=0`` / ``salifetime=0``: 5.2 raises the lifetime to rekeymargin +
  rekeyfuzz with a warning; pypluto refuses it as not supported (an SA that expires at
  once is never what was meant).  A lifetime > 0 shorter than that margin loads and
  the engine rekeys at half of it (daemon/registry.lifetime_notes says so), where 5.2
  raises the lifetime.
- a key set both in a conn and in its also= section with another value: 5.2's
  confread.c refuses the conn ("duplicate key ... while processing def"), against its
  own ipsec.conf(5), which says the conn's value overrides an also= at the end of the
  section; pypluto keeps the conn's own value (docs/config.md, Resolution).
- a duplicate key in one conn: 5.2 warns and keeps the first; pypluto refuses the conn
  (tests/config/test_libreswan_addconn.py, addconn-10-duplicate-key).
- an empty PSK (``""``, ``0x``): 5.2 loads it (a "weak secret"); pypluto refuses it:
  a key of no bytes authenticates nobody (RFC 7296 §2.15 asks the PSK to be as strong
  as the keys negotiated).
- a secrets index that does not parse: 5.2 logs it and keeps the record without that
  index (with none left the PSK matches any peer); pypluto refuses the record.
- ``replay-window=`` above 4096 on a conn that negotiates: refused when the conn loads
  (the kernel's replay bitmap, and the userspace plane's, hold 4096 packets), where 5.2
  checks only its interface limit (2^32 - 8) and the kernel then refuses every SA.
- ``ipsec-max-bytes=...EiB``: ipsec.conf(5) lists EiB, 5.2's multiplier table lacks it
  (PiB twice); pypluto follows the documentation.
- selectors of one end with different protocols/ports (``leftsubnet=a/24/tcp/22,b/24``):
  refused as not supported (one ``protoport`` per end here).
- ``nhelpers=-1`` in config setup stays accepted (pluto(8)'s "CPUs - 1", Libreswan's
  default), though 5.2's parser ignores a written -1 (kt_unsigned).
"""

from __future__ import annotations

import ast
from typing import Any

import pytest

from pypluto.config.ids import ID_KEY_ID, parse_id
from pypluto.config.parser import parse_config_text
from pypluto.config.secrets import parse_secrets_text

BASE = "conn c\n\tleft=192.0.2.1\n\tright=192.0.2.2\n\tauthby=secret\n"


def _parse(lines: str) -> Any:
    return parse_config_text(BASE + "\t" + lines.replace("\n", "\n\t") + "\n", "f")


def _shown(cfg: Any) -> list[str]:
    return [str(d) for d in cfg.diagnostics]


def _refused(lines: str, why: str, *, line: int | None = None, file_error: bool = False
             ) -> None:
    """The conn is not loaded and the error naming ``why`` is at ``line`` (default: the
    last line, the key under test)."""
    cfg = _parse(lines)
    line = line or 4 + lines.count("\n") + 1
    assert "c" not in cfg.conns, _shown(cfg)
    hits = [d for d in cfg.errors if why in str(d)]
    assert hits, _shown(cfg)
    assert str(hits[0]).startswith(f"f:{line}: "), _shown(cfg)
    assert (hits[0].conn is None) is file_error, _shown(cfg)


def _loads(lines: str, **want: Any) -> Any:
    cfg = _parse(lines)
    assert "c" in cfg.conns and not cfg.errors, _shown(cfg)
    conn = cfg.conns["c"]
    for attr, value in want.items():
        assert getattr(conn, attr) == value, (attr, _shown(cfg))
    return cfg


# ------------------------------------------------------------------ durations
@pytest.mark.parametrize(("value", "seconds"), [
    ("90", 90.0), ("90s", 90.0), ("5m", 300.0), ("2h", 7200.0), ("1d", 86400.0),
    ("1W", 604800.0), ("2H", 7200.0), ("1.5h", 5400.0), (".5h", 1800.0), ("1.h", 3600.0),
    ("500ms", 0.5), ("250000us", 0.25),
])
def test_libreswans_duration_forms_load(value: str, seconds: float) -> None:
    """Libreswan 5.2's ttodeltatime: [DECIMAL][.FRACTION] and one of us, ms, s, m, h,
    d, w in any case.  ``.5h`` and ``1.h`` were refused before ("invalid duration")."""
    _loads(f"retransmit-timeout={value}", retransmit_timeout=seconds)


@pytest.mark.parametrize(("value", "why"), [
    ("2min", "unknown duration unit 'min'"),
    ("30sec", "unknown duration unit 'sec'"),
    ("1hr", "unknown duration unit 'hr'"),
    ("2days", "unknown duration unit 'days'"),
    ("1h30m", "invalid duration"),
    (".", "invalid duration"),
    ('"1 h"', "invalid duration"),
])
def test_durations_libreswan_does_not_read_are_refused(value: str, why: str) -> None:
    """5.2 has no ``min``, ``sec``, ``hr``, ``day(s)`` multipliers ("has an unrecognized
    multiplier, keyword ignored": the default is used) and no space before the unit.
    Before, pypluto read ``2min`` as 120 s where Libreswan runs with 9m."""
    _refused(f"retransmit-timeout={value}",
             f"retransmit-timeout={value.strip(chr(34))}: {why}", file_error=True)


# ------------------------------------------------------------------ kt_unsigned
@pytest.mark.parametrize("line", [
    "replay-window=0x10", "priority=0x10", "tfc=0x10", "mtu=0x5dc", "reqid=1KiB",
    "metric=+5", "nflog=0b1", "leftikeport=0x1f4",
])
def test_unsigned_keys_are_decimal_only(line: str) -> None:
    """replay-window=, priority=, tfc=, mtu=, metric=, reqid=, nflog=, ikeport= are
    Libreswan 5.2's kt_unsigned: base 10 only ("non-decimal digit in number, keyword
    ignored", the default applies).  Before, pypluto took ``replay-window=0x10`` as 16
    and ``reqid=1KiB`` as 1024."""
    key = line.split("=")[0]
    _refused(line, f"{key}={line.split('=')[1]}: expected a number (non-decimal digit",
             file_error=True)


def test_unsigned_setup_key_is_decimal_only() -> None:
    cfg = parse_config_text("config setup\n\tike-socket-bufsize=0x10000\n", "f")
    assert not cfg.ok
    assert any(str(d).startswith("f:2: ike-socket-bufsize=0x10000: expected a number")
               for d in cfg.errors), _shown(cfg)
    cfg = parse_config_text("config setup\n\tike-socket-bufsize=65536\n", "f")
    assert cfg.ok and cfg.setup.ike_socket_bufsize == 65536
    cfg = parse_config_text("config setup\n\tnhelpers=0x4\n", "f")
    assert not cfg.ok and "nhelpers=0x4: expected a number" in str(cfg.errors[0])
    for value, want in (("-1", -1), ("4", 4)):
        cfg = parse_config_text(f"config setup\n\tnhelpers={value}\n", "f")
        assert cfg.ok and cfg.setup.nhelpers == want


# ------------------------------------------------------------------ ipsec-max-bytes/-packets
@pytest.mark.parametrize(("line", "attr", "value"), [
    ("ipsec-max-bytes=2KiB", "ipsec_max_bytes", 2048),
    ("ipsec-max-bytes=1.5MiB", "ipsec_max_bytes", 1572861),  # 5.2's integer arithmetic
    ("ipsec-max-bytes=1.0", "ipsec_max_bytes", 1),
    ("ipsec-max-bytes=1EiB", "ipsec_max_bytes", 2**60),  # ipsec.conf(5) lists EiB
    ("ipsec-max-packets=2Ki", "ipsec_max_packets", 2048),
    ("ipsec-max-packets=.5Ki", "ipsec_max_packets", 510),
])
def test_binary_counts_read_as_libreswan(line: str, attr: str, value: int) -> None:
    """Libreswan 5.2's ttobinary: a decimal (with a fraction when a multiplier takes
    it) and IEC 60027-2 multipliers, ``KiB`` for bytes, ``Ki`` for packets ("a prefix
    without B").  Before, ``ipsec-max-packets=2Ki`` and ``1.5MiB`` were refused."""
    _loads(line, **{attr: value})


@pytest.mark.parametrize(("line", "why"), [
    ("ipsec-max-packets=2KiB", 'unrecognized binary multiplier "KiB"'),
    ("ipsec-max-bytes=2Ki", 'unrecognized binary Bytes multiplier "Ki"'),
    ("ipsec-max-bytes=0x10", "bad binary Bytes value"),
    ("ipsec-max-bytes=1.5", "underflow"),
])
def test_binary_counts_libreswan_refuses(line: str, why: str) -> None:
    """Before, pypluto took ``ipsec-max-packets=2KiB`` and ``ipsec-max-bytes=0x10``
    (5.2 ignores both: no limit)."""
    _refused(line, why, file_error=True)


# ------------------------------------------------------------------ rekeyfuzz=
@pytest.mark.parametrize(("value", "why"), [
    ("50", 'bad percentage multiplier ""'),
    ("1.5%", 'bad percentage multiplier ".5%"'),
    ("%", "invalid percentage"),
    ("50pc", 'bad percentage multiplier "pc"'),
])
def test_rekeyfuzz_is_an_integer_followed_by_percent(value: str, why: str) -> None:
    """ipsec.conf(5): "an integer, which may exceed 100, followed by a `%'"; 5.2 ignores
    anything else (the default 100% applies).  Before, pypluto took ``rekeyfuzz=50`` as
    50% and ``1.5%`` as 1.5%."""
    _refused(f"rekeyfuzz={value}", why, file_error=True)


@pytest.mark.parametrize(("value", "fuzz"), [("0%", 0.0), ("50%", 50.0), ("10000%", 10000.0)])
def test_rekeyfuzz_integer_percent_loads(value: str, fuzz: float) -> None:
    _loads(f"rekeyfuzz={value}", rekeyfuzz=fuzz)


# ------------------------------------------------------------------ rekeymargin + rekeyfuzz
@pytest.mark.parametrize(("lines", "line", "why"), [
    ("rekeymargin=13h", 5, "ikelifetime=28800 must be greater than rekeymargin=46800s + "
     "rekeyfuzz=100% yet less than the maximum allowed 93600"),
    ("ikelifetime=1h\nrekeymargin=12h\nrekeyfuzz=101%", 6,
     "ikelifetime=3600 must be greater than rekeymargin=43200s + rekeyfuzz=101% yet less "
     "than the maximum allowed 86832"),
    ("rekeyfuzz=16001%", 5, "ikelifetime=28800 must be greater than rekeymargin=540s + "
     "rekeyfuzz=16001% yet less than the maximum allowed 86945"),
    ("rekeymargin=100000000", 5, "rekeymargin=100000000 is so large it causes overflow"),
    ("rekeyfuzz=2147483600%", 5, "rekeyfuzz=2147483600% is so large it causes overflow"),
])
def test_a_rekey_margin_beyond_the_maximum_lifetime_is_refused(lines: str, line: int,
                                                               why: str) -> None:
    """Libreswan 5.2 (connections.c): the largest margin, rekeymargin * (100 + rekeyfuzz)
    / 100, must fit in the 24h maximum lifetime, else the conn is not added (numbers
    overflowing its ints likewise).  Before, pypluto loaded ``rekeymargin=13h`` and
    rekeyed every SA at half its lifetime."""
    _refused(lines, why, line=line)


@pytest.mark.parametrize("lines", [
    "rekeymargin=12h",  # exactly 24h with 100%
    "rekeymargin=12h\nrekeyfuzz=1%",
    "rekeymargin=20h\nrekeyfuzz=0%",
    "rekeyfuzz=15900%",
    "type=passthrough\nrekeymargin=13h",  # never negotiated: 5.2 skips the check
])
def test_a_rekey_margin_within_the_maximum_loads(lines: str) -> None:
    _loads(lines)


# ------------------------------------------------------------------ replay-window=
def test_replay_window_above_the_kernels_bitmap_is_refused_at_load() -> None:
    """Linux XFRM's replay bitmap holds 4096 packets (XFRMA_REPLAY_ESN_MAX bytes), the
    userspace plane's too: a larger window never becomes an SA.  Libreswan 5.2 refuses
    at add only above its XFRM interface limit (2^32 - 8) and the kernel then refuses
    each SA; pypluto refuses the conn when it loads, with 5.2's words.  Before, the
    conn loaded and every Child SA failed when installed."""
    _loads("replay-window=4096", replay_window=4096)
    _refused("replay-window=4097", "replay-window=4097 exceeds the kernel interface "
             "limit of 4096")
    _refused("replay-window=4294967294", "replay-window=4294967294 exceeds the kernel "
             "interface limit of 4096")
    # a conn that installs no SA: only Libreswan's own limit
    _loads("type=passthrough\nreplay-window=5000")
    _refused("type=passthrough\nreplay-window=4294967289", "replay-window=4294967289 "
             "exceeds the kernel interface limit of 4294967288", line=6)


# ------------------------------------------------------------------ tfc=
@pytest.mark.parametrize(("lines", "line", "why"), [
    ("type=transport\ntfc=1000", 6, "connection with type=transport cannot specify tfc="),
    ("tfc=1000\ntype=transport", 5, "connection with type=transport cannot specify tfc="),
    ("phase2=ah\ntfc=1000", 6, "connection with encap_proto=ah cannot specify tfc="),
    ("tfc=4294967296", 5, "tfc=4294967296 exceeds upper bound of 4294967295"),
])
def test_tfc_where_libreswan_refuses_it(lines: str, line: int, why: str) -> None:
    """Libreswan 5.2 refuses tfc= on a transport-mode or AH conn (TFC padding is ESP
    tunnel-mode, RFC 4303 §2.7) and above 2^32 - 1.  Before, pypluto loaded both and
    padded the transport-mode ESP packets."""
    _refused(lines, why, line=line)


def test_tfc_above_16_bits_loads_as_in_libreswan() -> None:
    """5.2 takes any 32-bit tfc=; both planes pad up to the path MTU at most (XFRM's
    tfcpad, kernel/userspace/backend.py).  Before, pypluto refused tfc=70000."""
    _loads("tfc=70000", tfc=70000)
    _loads("tfc=0\ntype=transport", tfc=0)  # tfc=0 is no TFC: no conflict


# ------------------------------------------------------------------ leftprotoport=
@pytest.mark.parametrize(("value", "want"), [
    ("0x11/0x6a5", (17, 1701)),  # hex, as C's strtoul
    ("017/017", (15, 15)),  # a leading 0 is octal there: 15 (XNET), not 17
    ("17/0", (17, 0)),
    ("tcp/%any", (6, 0)),
])
def test_protoport_numbers_read_as_libreswan(value: str, want: tuple[int, int]) -> None:
    """Libreswan 5.2's ttoprotoport reads the protocol and port numbers with base 0
    (``0x``, ``0b``, a leading ``0`` for octal).  Before, pypluto refused ``0x11/0x6a5``
    ("unknown protocol") and read ``017`` as 17 where Libreswan selects protocol 15."""
    _loads(f"leftprotoport={value}")
    assert _parse(f"leftprotoport={value}").conns["c"].left.protoport == want


@pytest.mark.parametrize(("value", "why"), [
    ("0/%any", "port wildcard (%any) requires a valid protocol"),
    ("17/080", "unknown port '080'"),  # 8 is no octal digit, and no service is "080"
    ("256/0", "numeric protocol must be <= 255"),
])
def test_protoport_refused_as_libreswan(value: str, why: str) -> None:
    """Before, ``0/%any`` loaded (any protocol, any port) and ``17/080`` was port 80."""
    _refused(f"leftprotoport={value}", why)


# ------------------------------------------------------------------ subnet= selectors
@pytest.mark.parametrize(("selector", "subnet", "protoport"), [
    ("1.0.0.1/32/tcp/22", "1.0.0.1/32", "tcp/22"),
    ("1.0.0.0/24:udp/1701", "1.0.0.0/24", "udp/1701"),
    ("1.0.0.0/24/tcp", "1.0.0.0/24", "tcp"),
    ("1.0.0.0/24/tcp/22,2001:db8::/64/tcp/22", "1.0.0.0/24,2001:db8::/64", "tcp/22"),
])
def test_subnet_selector_is_subnet_and_protoport(selector: str, subnet: str,
                                                 protoport: str) -> None:
    """Libreswan 5.2 reads ``leftsubnet=ADDRESS/PREFIX/PROTOCOL/PORT`` (ttoselector_num)
    as that subnet with that protocol and port, as ``leftprotoport=`` says it
    (addconn-15-sourceip shows both as 1.0.0.1/32/TCP/22).  Before, pypluto refused it
    ("is not a subnet")."""
    got = _parse(f"leftsubnet={selector}")
    want = _parse(f"leftsubnet={subnet}\nleftprotoport={protoport}")
    assert "c" in got.conns and not got.errors, _shown(got)
    g, w = got.conns["c"].left, want.conns["c"].left
    assert (g.subnets, g.protoport) == (w.subnets, w.protoport)
    assert g.protoport != (0, 0)


@pytest.mark.parametrize(("lines", "why", "unsupported"), [
    ("leftsubnet=1.0.0.0/24/tcp/22\nleftprotoport=udp", "cannot be combined with "
     "leftprotoport=", False),
    ("leftsubnet=1.0.0.0/24/bogus/22", "invalid, unknown protocol 'bogus'", False),
    ("leftsubnet=1.0.0.0/24/tcp/22,2001:db8::/64", "is not supported by pypluto "
     "(selectors of one end with different protocols or ports", True),
])
def test_subnet_selectors_refused(lines: str, why: str, unsupported: bool) -> None:
    """With ``protoport=`` too, Libreswan reads the subnet the old way and refuses it;
    selectors of one end with different protocols cannot be one ``protoport`` here."""
    cfg = _parse(lines)
    assert "c" not in cfg.conns
    (d,) = [d for d in cfg.errors if why in str(d)]
    assert (d.line, d.unsupported) == (5, unsupported), str(d)


def test_sourceip_outside_a_selector_is_refused_at_add() -> None:
    """addconn-15-sourceip, in Libreswan 5.2's words."""
    from test_libreswan_add_outcomes import _add  # tests/config is on sys.path

    from pypluto.control.protocol import RC_FATAL, RC_SUCCESS

    rc, out, added = _add(BASE + "\tleftsourceip=1.0.0.1\n\tleftsubnet=1.2.3.4/32/tcp/22\n")
    assert (rc, out, added) == (RC_FATAL, ['"c": f:5: leftsourceip=1.0.0.1 invalid, address '
                                           '1.0.0.1 is not within leftsubnet=1.2.3.4/32/tcp/22'],
                                [])
    rc, out, added = _add(BASE + "\tleftsourceip=1.0.0.1\n\tleftsubnet=1.0.0.1/32/tcp/22\n")
    assert (rc, added) == (RC_SUCCESS, ["c"]), out


# ------------------------------------------------------------------ %default and also=
def test_the_last_default_section_wins() -> None:
    """ipsec.conf(5): several %default sections may set a key, "the last value is used"
    (5.2 loads them in order over one another); it applies to conns before it too.
    Before, the first %default's value won."""
    text = ("conn %default\n\tikelifetime=1h\n\tkeyingtries=3\n" + BASE +
            "conn %default\n\tikelifetime=2h\n\trekeymargin=3m\n")
    cfg = parse_config_text(text, "f")
    conn = cfg.conns["c"]
    assert (conn.ikelifetime, conn.rekeymargin) == (7200.0, 180.0), _shown(cfg)
    assert conn.origins["ikelifetime"].line == 9


def test_an_also_loop_inserts_each_section_once() -> None:
    """ipsec.conf(5): "duplicate insertions of the same section are ignored"; 5.2's
    confread.c visits a section once per conn, so an also= loop is no error.  Before,
    pypluto refused each conn of the loop ("also=a forms a loop")."""
    text = (BASE + "\talso=a\n"
            "conn a\n\talso=b\n\tikelifetime=1h\n"
            "conn b\n\talso=a\n\trekeymargin=2m\n\tikelifetime=3h\n"
            "conn s\n\talso=s\n\tleft=192.0.2.1\n\tright=192.0.2.3\n\tauthby=secret\n")
    cfg = parse_config_text(text, "f")
    assert not cfg.errors and not cfg.failed, _shown(cfg)
    got = {n: (c.ikelifetime, c.rekeymargin, c.also) for n, c in cfg.conns.items()}
    assert got == {"c": (3600.0, 120.0, ["a", "b"]), "a": (3600.0, 120.0, ["b"]),
                   "b": (10800.0, 120.0, ["a"]), "s": (28800.0, 540.0, [])}


# ------------------------------------------------------------------ warnings 5.2 gives
@pytest.mark.parametrize(("lines", "line", "warning"), [
    ("leftsubnet=10.0.0.1/8", 5,
     "zeroing non-zero address identifier 10.0.0.1 in leftsubnet=10.0.0.1/8"),
    ("rightsubnet=10.0.0.0/8,2001:db8::1/64", 5, "zeroing non-zero address identifier "
     "2001:db8::1 in rightsubnet=10.0.0.0/8,2001:db8::1/64"),
    ("mark=5\nmark-in=6", 6, "mark-in=6 overrides mark=5"),
    ("mark-out=0x7\nmark=5", 5, "mark-out=0x7 overrides mark=5"),
])
def test_libreswans_warnings_for_what_it_changes(lines: str, line: int,
                                                 warning: str) -> None:
    """A subnet= with host bits is its network and mark-in=/mark-out= replace mark= for
    their direction: 5.2 says so when the conn is added (connections.c), pypluto did
    it silently."""
    cfg = _loads(lines)
    hits = [str(d) for d in cfg.diagnostics if d.severity == "warning" and warning in str(d)]
    assert hits and hits[0].startswith(f"f:{line}: warning: "), _shown(cfg)
    if "subnet" in lines:
        assert str(cfg.conns["c"].left.subnets[0] if "left" in lines else
                   cfg.conns["c"].right.subnets[1]) in ("10.0.0.0/8", "2001:db8::/64")


@pytest.mark.parametrize(("lines", "line", "warning"), [
    ("esn=true", 6, "ignoring esn=yes as connection is never-negotiate"),
    ("replay-window=0\nesn=yes", 7, "ignoring esn=yes as connection is never-negotiate"),
    ("fragmentation=force", 6, "never-negotiate connection ignores fragmentation=force"),
    ("ikelifetime=0\nsalifetime=0", None, None),
])
def test_never_negotiate_conns_ignore_sa_keys_as_libreswan(lines: str, line: int | None,
                                                           warning: str | None) -> None:
    """A type=passthrough conn negotiates no SA: Libreswan 5.2 says it ignores esn= and
    fragmentation=, and skips the lifetime and replay-window=0 checks.  Before,
    pypluto refused ``replay-window=0`` + ``esn=yes`` and ``ikelifetime=0`` there, said
    nothing of esn=, and warned "IKEv1 only fragmentation=force ignored"."""
    cfg = _loads("type=passthrough\n" + lines)
    if warning is None:
        assert not cfg.diagnostics, _shown(cfg)
        return
    assert [str(d) for d in cfg.diagnostics] == [
        f"f:{line}: warning: while loading 'c': {warning}"]


def test_no_warning_for_a_subnet_without_host_bits() -> None:
    cfg = _loads("leftsubnet=10.0.0.0/8\nrightsubnet=%any")
    assert not [d for d in cfg.diagnostics if "zeroing" in str(d)]


# ------------------------------------------------------------------ ipsec.secrets
PSK = "Kq2-long-enough-secret-77"


def test_a_hash_inside_a_token_is_not_a_comment() -> None:
    """Libreswan's lexer (lib/libswan/lex.c) starts a comment only where a token would
    start; ``@#0a0b`` is an ID_KEY_ID index (hex).  Before, pypluto cut the line at the
    ``#`` and refused the record ("missing ':'")."""
    store = parse_secrets_text(f'@#0a0b @b : PSK "{PSK}" # a comment\n'
                               f'@c @d : PSK "{PSK}-2"#also a comment\n', "s")
    assert store.ok, _shown(store)
    first, second = store.secrets
    assert first.indices[0].id_type == ID_KEY_ID and first.indices[0].data == b"\x0a\x0b"
    assert store.psk_for(parse_id("@#0a0b"), parse_id("@b")) == PSK.encode()
    assert second.value == f"{PSK}-2".encode()


def test_a_0t_secret_runs_to_the_end_of_the_record() -> None:
    """lex.c: a ``0t`` token goes to the end of the line (text with spaces).  Before,
    ``PSK 0tsome words`` was refused ("PSK needs exactly one value")."""
    store = parse_secrets_text("@a @b : PSK 0tcorrect horse battery staple\n", "s")
    assert store.ok, _shown(store)
    assert store.psk_for(parse_id("@a"), parse_id("@b")) == b"correct horse battery staple"


@pytest.mark.parametrize(("record", "what"), [
    ('@a @b : PSK ""', "empty PSK"),
    ("@a @b : PSK 0x", "empty PSK"),
    ("@a bad:index : PSK 0x41424344", "bad index"),
])
def test_secrets_refused_where_libreswan_loads(record: str, what: str) -> None:
    """Kept: see the module docstring (empty PSK, an index that does not parse)."""
    store = parse_secrets_text(record + "\n", "s")
    assert not store.secrets and any(what in str(d) for d in store.diagnostics)


# ------------------------------------------------------------------ already right
ALREADY = [
    ("ikelifetime=25h", "works:ikelifetime=86400.0"),
    ("ipsec-lifetime=2d", "works:salifetime=86400.0"),
    ("leftprotoport=tcp/%any", "works:left.protoport=(6, 0)"),
    ("leftprotoport=17/0", "works:left.protoport=(17, 0)"),
    ("leftprotoport=icmp/8", "works:left.protoport=(1, 8)"),
    ("leftprotoport=udp/bootps", "works:left.protoport=(17, 67)"),
    ("sendca=ALL", "works:sendca='all'"),
    ("mark=-1", "works:mark_in=(-1, 4294967295)"),
    ("mark=0x1/0xffffffff", "works:mark_out=(1, 4294967295)"),
    ("priority=4294967295", "works:priority=4294967295"),
    ("priority=4294967296", "refused:priority=4294967296: must be between"),
    ("ikelifetime=0", "refused:ikelifetime=0 is not supported by pypluto"),
    ("salifetime=0", "refused:ipsec-lifetime=0 is not supported by pypluto"),
    ("hostaddrfamily=ipv6", "refused:hostaddrfamily=ipv6 but left=192.0.2.1 is IPv4"),
    ("right=2001:db8::2", "refused:left= and right= are of different address families"),
    ("nic-offload=auto", "refused:nic-offload=auto is not supported by pypluto"),
]


@pytest.mark.parametrize(("lines", "expected"), ALREADY, ids=[r[0] for r in ALREADY])
def test_already_as_libreswan(lines: str, expected: str) -> None:
    how, _, what = expected.partition(":")
    if how == "works":
        attr, _, want = what.partition("=")
        cfg = _loads(lines)
        obj: Any = cfg.conns["c"]
        for part in attr.split("."):
            obj = getattr(obj, part)
        assert obj == ast.literal_eval(want)
        return
    if lines.startswith("right="):  # a second right=: its own conn text
        cfg = parse_config_text("conn c\n\tleft=192.0.2.1\n\tauthby=secret\n\t" + lines +
                                "\n", "f")
        assert "c" not in cfg.conns and any(what in str(d) for d in cfg.errors)
        return
    _refused(lines, what)


def test_subnets_pairs_and_default_after_conns() -> None:
    """``leftsubnets={a b}`` makes one conn per pair (NAME/1x0...); a ``conn %default``
    written after the conns still applies to them (5.2 loads %default first)."""
    text = (BASE + "\tleftsubnets={10.0.0.0/8 11.0.0.0/8}\n\trightsubnet=12.0.0.0/8\n"
            "conn %default\n\tikelifetime=1h\n")
    cfg = parse_config_text(text, "f")
    assert sorted(cfg.conns) == ["c/1x0", "c/2x0"], _shown(cfg)
    assert {c.ikelifetime for c in cfg.conns.values()} == {3600.0}
