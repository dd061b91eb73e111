"""Pure functions of the daemon and control layers (no processes, no sockets)."""

from __future__ import annotations

import json
import struct

import pytest

from pypluto.config.virtual_private import VirtualPrivate
from pypluto.control import format as fmt
from pypluto.control.protocol import (
    VERSION,
    ProtocolError,
    Request,
    decode_body,
    encode_frame,
    parse_request,
)
from pypluto.daemon.helpers import HelperPool, helper_count
from pypluto.daemon.logger import PlutoLogger, RateLimiter, mask_addresses, parse_debug_specs
from pypluto.daemon.options import OptionError, parse_args


def test_virtual_private_syntax_and_policy():
    vp = VirtualPrivate.parse("%v4:10.0.0.0/8,%v4:192.168.0.0/16,%v4:!192.168.1.0/24,"
                              "%v6:fd00::/8")
    assert vp.allows("10.2.0.0/16") and vp.allows("192.168.7.0/24") and vp.allows("fd00:1::/64")
    assert not vp.allows("192.168.1.0/25")  # excluded (our LAN)
    assert not vp.allows("172.16.0.0/16")  # not listed
    assert not vp.allows("11.0.0.0/8")
    for bad, msg in (("10.0.0.0/8", "must start with"), ("%v4:fd00::/8", "IPv6 subnet"),
                     ("%v4:10.0.0.300/8", "not a subnet"), ("", "empty")):
        with pytest.raises(ValueError, match=msg):
            VirtualPrivate.parse(bad)


def test_mask_addresses():
    line = 'packet from 192.0.2.1:500: "c" 2001:db8::1 fe80::1%eth0 ::1 ok; time 12:30:45'
    out = mask_addresses(line)
    assert "192.0.2.1" not in out and "2001:db8::1" not in out and "fe80::1" not in out
    assert out.count("<ip address>") == 4
    assert "12:30:45" in out  # a clock is not an address


def test_debug_specs():
    assert parse_debug_specs(["base", "crypt"], set()) == {"base", "crypt"}
    assert parse_debug_specs(["no-base"], {"base", "crypt"}) == {"crypt"}
    assert "private" not in parse_debug_specs(["all"], set())
    assert parse_debug_specs(["none"], {"base"}) == set()
    assert parse_debug_specs(["base,tmi"], set()) == {"base", "tmi"}
    with pytest.raises(ValueError, match="unrecognized debug option"):
        parse_debug_specs(["everything"], set())


def test_rate_limiter_floods():
    rl = RateLimiter(limit=3, window=1.0)
    got = [rl.allow(100.0 + i * 0.01) for i in range(10)]
    assert [ok for ok, _ in got] == [True] * 3 + [False] * 7
    assert "rate limited log exceeded" in (got[3][1] or "")
    ok, notice = rl.allow(102.0)  # next window: allowed again, with the count
    assert ok and notice == "rate limited log: 6 messages suppressed"


def test_logger_rate_limit_and_debug_prefix(tmp_path):
    log = PlutoLogger(logfile=str(tmp_path / "l"), logtime=False, rate_limit=5,
                      debug={"base"})
    for i in range(50):
        log.log(f"bogus packet {i}", remote="192.0.2.1:500", rate_limited=True)
    log.log("debug line", "debug", conn="c", serial=3)
    log.log("crypto detail", "debug", debug_class="crypt")  # class not enabled
    log.close()
    lines = (tmp_path / "l").read_text().splitlines()
    assert sum("bogus packet" in ln for ln in lines) == 5
    assert any("rate limited log exceeded" in ln for ln in lines)
    assert '| "c" #3: debug line' in lines
    assert not any("crypto detail" in ln for ln in lines)
    assert lines[0] == "packet from 192.0.2.1:500: bogus packet 0"


def test_options_merge_config_and_cli(tmp_path):
    conf = tmp_path / "ipsec.conf"
    conf.write_text("config setup\n\tuniqueids=no\n\tkeep-alive=33\n\tlogfile=/tmp/x.log\n"
                    "\tlogtime=no\n\tplutodebug=base\n\tnhelpers=3\n"
                    "\tvirtual-private=%v4:10.0.0.0/8\n")
    kind, o = parse_args(["--config", str(conf)])
    assert kind == "run"
    assert (o.uniqueids, o.keep_alive, o.logfile, o.logtime, o.nhelpers) == \
        (False, 33, "/tmp/x.log", False, 3)
    assert o.debug == {"base"} and o.virtual_private == "%v4:10.0.0.0/8"
    kind, o = parse_args(["--config", str(conf), "--uniqueids", "--keep-alive", "7",
                          "--stderrlog", "--nhelpers", "0", "--no-debug", "base",
                          "--rundir", str(tmp_path)])
    assert (o.uniqueids, o.keep_alive, o.logfile, o.stderrlog, o.nhelpers) == \
        (True, 7, None, True, 0)
    assert o.debug == set() and o.pidfile == f"{tmp_path}/pluto.pid"
    assert o.coredir == str(tmp_path)  # follows --rundir unless dumpdir= / --coredir
    assert o.ctlsocket == f"{tmp_path}/pluto.ctl"
    kind, o = parse_args(["--use-userspace", "--crlcheckinterval", "0"])
    assert o.backend == "userspace" and o.crlcheckinterval == 0.0  # 0: no CRL fetching
    with pytest.raises(OptionError, match="--ikeport and --natikeport must differ"):
        parse_args(["--ikeport", "4500"])


def test_helpers():
    assert helper_count(0) == 0 and helper_count(4) == 4 and helper_count(-1) >= 1
    inline = HelperPool(0)
    assert inline.kind == "inline" and inline.submit(lambda x: x * 2, 21).result() == 42
    pool = HelperPool(2)
    try:
        assert pool.kind == "threads" and pool.submit(sum, [1, 2, 3]).result(10) == 6
        fut = pool.submit(lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            fut.result(10)
    finally:
        pool.close()


def test_protocol_frames():
    frame = encode_frame(Request("status", {"json": True}).to_obj())
    (n,) = struct.unpack("!I", frame[:4])
    obj = decode_body(frame[4:])
    assert n == len(frame) - 4 and obj["version"] == VERSION
    assert parse_request(obj) == Request("status", {"json": True})
    with pytest.raises(ProtocolError, match="malformed"):
        decode_body(b"\xff\xfe")
    with pytest.raises(ProtocolError, match="not a JSON object"):
        decode_body(b"[1,2]")
    with pytest.raises(ProtocolError, match="Libreswan's whack"):
        decode_body(json.dumps({"version": 1}).encode())
    with pytest.raises(ProtocolError, match="unknown command"):
        parse_request({**obj, "command": "format-disk"})
    with pytest.raises(ProtocolError, match="args must be an object"):
        parse_request({**obj, "args": [1]})


def test_humber_and_state_names():
    assert [fmt.humber(n) for n in (0, 840, 2048, 5 * 1024 * 1024)] == ["0B", "840B", "2KB",
                                                                         "5MB"]
    assert fmt.short_state("STATE_V2_ESTABLISHED_IKE_SA") == "ESTABLISHED_IKE_SA"
    assert fmt.story("STATE_V2_ESTABLISHED_CHILD_SA") == "established Child SA"


@pytest.mark.parametrize("ours,shown", [
    # Libreswan 5.2's status lines (testing/pluto/DIR/*.console.txt): no STATE_V2_ prefix
    ("STATE_V2_ESTABLISHED_IKE_SA", "ESTABLISHED_IKE_SA (established IKE SA)"),
    ("STATE_V2_ESTABLISHED_CHILD_SA", "ESTABLISHED_CHILD_SA (established Child SA)"),
    ("STATE_V2_PARENT_I1", "IKE_SA_INIT_I (sent IKE_SA_INIT request)"),
    ("STATE_V2_PARENT_I2", "IKE_AUTH_I (sent IKE_AUTH request)"),
    ("STATE_V2_PARENT_R1", "IKE_SA_INIT_R (sent IKE_SA_INIT response, waiting for "
                           "IKE_INTERMEDIATE or IKE_AUTH request)"),
    ("STATE_V2_REKEY_IKE_I1", "REKEY_IKE_I1 (sent CREATE_CHILD_SA request to rekey IKE SA)"),
    ("STATE_V2_NEW_CHILD_I1", "NEW_CHILD_I1 (sent CREATE_CHILD_SA request for new IPsec SA)"),
    ("STATE_V2_REKEY_CHILD_I1",
     "REKEY_CHILD_I1 (sent CREATE_CHILD_SA request to rekey IPsec SA)"),
    ("STATE_V2_IKE_SA_DELETE", "IKE_SA_DELETE (deleting IKE SA)"),
])
def test_states_are_shown_with_libreswan_5_2_names(ours: str, shown: str) -> None:
    assert fmt.shown_state(ours) == shown


def test_psk_listing_never_shows_value():
    class Rec:
        kind = "PSK"
        indices = ["@west", "@east"]
        value = b"top-secret"
        origin = "ipsec.secrets:1"

    lines = fmt.render_psks([Rec()], ["ipsec.secrets"])
    assert lines[0] == "List of Pre-shared Keys (from ipsec.secrets)"
    assert "PSK @west @east" in lines[2] and "top-secret" not in "\n".join(lines)


def test_syslog_default_authpriv(monkeypatch):
    import syslog

    calls: list[tuple] = []
    monkeypatch.setattr(syslog, "openlog", lambda *a: calls.append(("open", *a)))
    monkeypatch.setattr(syslog, "syslog", lambda *a: calls.append(("log", *a)))
    monkeypatch.setattr(syslog, "closelog", lambda: calls.append(("close",)))
    log = PlutoLogger()
    log.log("hello", conn="c", serial=1)
    log.log("dbg", "debug")  # debugging off: not sent
    log.log("bad", "error")
    log.close()
    assert calls[0] == ("open", "pluto", syslog.LOG_PID, syslog.LOG_AUTHPRIV)
    assert ("log", syslog.LOG_WARNING, '"c" #1: hello') in calls
    assert ("log", syslog.LOG_ERR, "ERROR: bad") in calls
    assert not any("dbg" in str(c) for c in calls) and calls[-1] == ("close",)


def test_flush_rate_limit_summary(tmp_path, monkeypatch):
    import pypluto.daemon.logger as lg

    now = [1000.0]
    monkeypatch.setattr(lg.time, "monotonic", lambda: now[0])
    log = PlutoLogger(logfile=str(tmp_path / "l"), logtime=False, rate_limit=2)
    for i in range(6):
        log.log(f"junk {i}", rate_limited=True)
    assert log.flush_rate_limit()  # window not over yet: still suppressing
    now[0] += 1.5
    assert not log.flush_rate_limit()  # summary written, limiter reset
    assert not log.flush_rate_limit()
    log.close()
    lines = (tmp_path / "l").read_text().splitlines()
    assert lines[-1] == "rate limited log: 3 messages suppressed"
    assert sum(ln.startswith("junk") for ln in lines) == 2


def test_python_warnings_become_escaped_debug_lines(tmp_path, monkeypatch, capsys):
    """cryptography warns about a peer certificate's odd names: with capture_warnings
    that is a debug line of the log (escaped, with plutodebug), never raw text with a
    line of our source on stderr."""
    import warnings

    from pypluto.daemon.logger import capture_warnings

    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # restored after
    path = tmp_path / "l"
    log = PlutoLogger(logfile=str(path), logtime=False, debug={"base"})
    capture_warnings(log)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("Attribute's length must be >= 2 and <= 2, but it was 8\n\x1b[2J",
                      UserWarning, stacklevel=1)
    log.close()
    text = path.read_text()
    assert "| UserWarning: Attribute's length must be >= 2 and <= 2, but it was 8\\n\\x1b[2J" \
        " (test_daemon_units.py:" in text, text
    assert "warnings.warn" not in text and capsys.readouterr().err == ""
