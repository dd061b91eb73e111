"""Red team 26: what operators' scripts read of ``ipsec trafficstatus`` / ``showstates`` /
``status`` / ``--json`` when an SA carries a hostile peer ID.

Libreswan 5.2 facts (read, not copied):

* ``whack_trafficstatus.c``: ``, maxBytes=`` is the conn's ``ipsec-max-bytes=`` printed by
  ``jam_humber_uintmax`` (``2^63`` unset, else binary units strictly above:
  testing/pluto/ikev2-expire-01-bytes shows ``maxBytes=2KiB`` and ``ipsec_max_bytes:
  2KiB;``); ``whack_showstates.c`` prints ``ESPmax=`` the same way and the byte counts
  with ``jam_readable_humber`` (B, KB, then MB whatever the size).
* ``id='...'`` is ``jam_id_bytes(.., jam_sanitized_bytes)`` (lib/libswan/jam_bytes.c):
  printable ASCII as is (a backslash too: a DN's ``\\,`` shows as ``\\,``), ``\\0 \\a \\b
  \\t \\n \\v \\f \\r``, any other byte in octal (``\\ooo`` before a digit).

Ours, on purpose: a ``'`` in the ID is written ``\\47`` (Libreswan prints it raw), so a
peer's ID cannot close ``id='...'`` and append a fake ``, lease=`` field after it.
"""

from __future__ import annotations

import dataclasses
import json
import re
from types import SimpleNamespace
from typing import Any

from pypluto.config import ids
from pypluto.config.model import Identity
from pypluto.config.parser import parse_config_text
from pypluto.control import format as fmt
from pypluto.daemon.status import conn_details
from pypluto.textsafe import sanitized
from tests.ike.harness import Net
from tests.ike.test_hostile_roadwarrior import _up, rw_net

ESC_ID = "ev'il\\x, lease=10.9.9.9/32\x1b[31m\xe9\u202e\"q\t1\n#9: \"admin\""
"""A peer FQDN: quote, backslash, a fake lease, ANSI, non-ASCII, bidi, tab, newline."""
ESC_SHOWN = ("@ev\\47il\\x, lease=10.9.9.9/32\\33[31m\\303\\251\\342\\200\\256\"q\\t1\\n#9: "
             '"admin"')

TRAFFIC = re.compile(r"^#(\d+): \"[^\"]+\"(\[\d+\] \S+)?, type=ESP, add_time=\d+, "
                     r"inBytes=\d+, outBytes=\d+, maxBytes=[^,]+B, id='([^']*)'"
                     r"(, lease=[0-9./,:a-f]+)?$")
"""What a script may parse: ``id='`` up to the next ``'``, then only our own fields."""


def _snap(net: Net, side: str = "east", details: dict[str, Any] | None = None
          ) -> dict[str, Any]:
    s = getattr(net, side)
    eng = dataclasses.asdict(s.engine.status(net.now))
    return {"pluto": {"version": "t", "pid": 1, "uptime": 1.0, "backend": "none", "helpers": 0,
                      "helper_kind": "inline", "debug": [], "uniqueids": True,
                      "force_busy": False, "keep_alive": 20, "virtual_private": "",
                      "crl_strict": False, "crlcheckinterval": 0, "secctx_attr_type": 32001,
                      "interfaces": [], "unoriented": [], "conn_details": details or {}},
            "now": net.now, "wallclock": 1.7e9, "engine": eng}


def _details(net: Net, side: str = "east") -> dict[str, Any]:
    """``conn_details`` (daemon/status.py) of each conn of ``side``, without a daemon."""
    reg = SimpleNamespace(serials={}, up=set())
    socks = SimpleNamespace(interfaces=[])
    opts = SimpleNamespace(keep_alive=20)
    conns = getattr(net, side).engine.connections
    return {n: conn_details(c, reg, socks, opts) for n, c in conns.items()}  # type: ignore[arg-type]


def _hostile_net(ident: str = ESC_ID) -> Net:
    net = Net(west_kw={"leftid": "@" + ident}, east_kw={"left": "%any", "leftid": "%any"})
    net.up()
    assert net.established(net.east), net.east.logs()
    return net


def test_trafficstatus_id_is_sanitized_as_libreswan_and_cannot_end_the_field() -> None:
    """Each Child SA is one line; ``id='...'`` holds the whole ID, in Libreswan's octal
    escapes (not ``\\x1b``/``\\u202e``), with the ``'`` written ``\\47``: the fake
    ``, lease=10.9.9.9/32`` stays inside the quotes and no field follows the ID."""
    net = _hostile_net()
    snap = _snap(net)
    (line,) = fmt.render("trafficstatus", snap)
    m = TRAFFIC.match(line)
    assert m, line
    assert m.group(3) == ESC_SHOWN
    assert m.group(4) is None  # no lease: the one in the ID is not a field
    assert line.isascii() and line.isprintable()


def test_every_status_command_keeps_one_record_per_line_and_json_round_trips() -> None:
    """No command prints a raw control or non-ASCII byte of the peer's ID, no line of any
    command starts a fake ``#9: "admin"`` record, and each ``--json`` view survives a
    JSON round trip with the exact ID."""
    net = _hostile_net()
    snap = _snap(net, details=_details(net))
    for cmd in sorted(fmt.STATUS_COMMANDS):
        for ln in fmt.render(cmd, snap):
            assert ln.isprintable(), (cmd, ln)
            assert not ln.startswith("#9:"), (cmd, ln)
        view = fmt.json_view(cmd, snap)
        text = json.dumps(view, separators=(",", ":"), sort_keys=True)
        assert text.isascii() and "\n" not in text
        assert json.loads(text) == json.loads(json.dumps(view))
    (row,) = fmt.json_view("trafficstatus", snap)["child_sas"]
    assert row["remote_id"] == "@" + ESC_ID
    assert row["max_bytes"] is None  # ipsec-max-bytes= not set: 2^63
    (ike,) = fmt.json_view("showstates", snap)["ike_sas"]
    assert ike["remote_id"] == "@" + ESC_ID


def test_sanitized_follows_jam_sanitized_bytes() -> None:
    """Libreswan 5.2 ``jam_sanitized_bytes``: named C escapes, octal for the rest (three
    digits only before a digit), ``\\0`` even before a digit, printable ASCII as is."""
    assert sanitized("a\x1bb") == "a\\33b"
    assert sanitized("a\x1b1") == "a\\0331"
    assert sanitized("\x00\x07\x08\t\n\x0b\x0c\r") == "\\0\\a\\b\\t\\n\\v\\f\\r"
    assert sanitized("\x001") == "\\01"  # as Libreswan (its switch comes first)
    assert sanitized(b"\xff9\x7f") == "\\3779\\177"
    assert sanitized("x\udcffy") == "x\\377y"  # a byte kept by surrogateescape
    assert sanitized("O=a\\, b") == "O=a\\, b"
    assert sanitized("it's", extra="'") == "it\\47s"
    long = sanitized("\x1b" * 1000)
    assert long.endswith("...[3000 chars]") and len(long) <= 512 + len("...[3000 chars]")
    assert long.startswith("\\33\\33") and long[:-len("...[3000 chars]")].endswith("\\33")


def test_dn_with_escaped_comma_is_shown_as_libreswan_shows_it() -> None:
    """testing/pluto/ikev2-x509-39-OU-comma: ``192.1.2.45[CN=client, OU=Global\\, Support\\,
    Services, ...]`` -- the DN's backslash is not doubled in the connection line."""
    dn_l = "CN=client, OU=Global\\, Support\\, Services, O=Test Example, C=CZ"
    dn_r = "CN=server, OU=Global\\, Support, O=Test Example, C=CZ"
    net = Net(west_kw={"leftid": dn_l, "rightid": dn_r})
    snap = _snap(net, side="west", details=_details(net, "west"))
    lines = fmt.render("connectionstatus", snap)
    first = [ln for ln in lines if "...192.0.2.2" in ln]
    assert first and f"192.0.2.1[{dn_l}]" in first[0] and f"192.0.2.2[{dn_r}]" in first[0], \
        lines
    ids = [ln for ln in lines if "our idtype" in ln]
    assert ids and f"our id={dn_l};" in ids[0] and ids[0].endswith(f"their id={dn_r}"), ids


def _max_bytes_net(value: str) -> Net:
    net = Net()
    for side in (net.west, net.east):
        side.engine.connections["west-east"].ipsec_max_bytes = \
            parse_max_bytes(value)
    net.up()
    return net


def parse_max_bytes(value: str) -> int:
    cfg = parse_config_text("conn x\n\tleft=192.0.2.1\n\tright=192.0.2.2\n"
                            f"\tipsec-max-bytes={value}\n\tauto=add\n")
    return cfg.conns["x"].ipsec_max_bytes  # type: ignore[return-value]


def test_max_bytes_shows_ipsec_max_bytes_as_libreswan() -> None:
    """ikev2-expire-01-bytes (``ipsec-max-bytes=2KiB``): ``maxBytes=2KiB`` in
    ``--trafficstatus``, ``ESPmax=2KiB`` in ``--showstates``, ``ipsec_max_bytes: 2KiB;``
    in ``--status``; the JSON row has the number."""
    net = _max_bytes_net("2KiB")
    snap = _snap(net, details=_details(net))
    (line,) = fmt.render("trafficstatus", snap)
    assert ", maxBytes=2KiB, id='" in line, line
    assert any(" ESPmax=2KiB" in ln for ln in fmt.render("showstates", snap))
    assert any("ipsec_max_bytes: 2KiB; ipsec_max_packets: 2^63;" in ln
               for ln in fmt.render("connectionstatus", snap))
    (row,) = fmt.json_view("trafficstatus", snap)["child_sas"]
    assert row["max_bytes"] == 2048


def test_humber_units_are_libreswans() -> None:
    """``jam_humber`` switches unit only strictly above it (1024 stays 1024, 1536 is
    1Ki); ``jam_readable_humber`` stops at MB (5 GiB is 5120MB, not 5GB)."""
    assert [fmt.humber_max(v) for v in (None, 2**63, 1024, 1025, 1536, 2048, 2**30 + 1)] == \
        ["2^63", "2^63", "1024", "1Ki", "1Ki", "2Ki", "1Gi"]
    assert [fmt.humber(v) for v in (1023, 1024, 2**20 - 1, 2**20, 5 * 2**30)] == \
        ["1023B", "1KB", "1023KB", "1MB", "5120MB"]
    net = Net()
    net.up()
    snap = _snap(net)
    for ike in snap["engine"]["ike_sas"]:
        for ch in ike["children"]:
            ch.update(in_bytes=5 * 2**30, out_bytes=3 * 2**40)
    assert any(" Traffic: ESPin=5120MB ESPout=3145728MB ESPmax=2^63B" in ln
               for ln in fmt.render("showstates", snap))


def test_road_warrior_lease_after_a_hostile_id() -> None:
    """A road warrior with a hostile ID on a gateway with a pool: the lease is the one
    field after ``id='...'``; the status's lease line escapes the client ID too (a ``"``
    in octal, so it cannot fake the ``"conn"`` that follows)."""
    net = rw_net(pool="198.51.100.10-198.51.100.13")
    net.west.engine.connections["west-east"].left.id = ids.parse_id("@rw\"' #7 \"x\x1by")
    _up(net, "west-east")
    assert net.established(net.east), net.east.logs()
    snap = _snap(net)
    (line,) = fmt.render("trafficstatus", snap)
    m = TRAFFIC.match(line)
    assert m and m.group(3) == "@rw\"\\47 #7 \"x\\33y", line
    assert m.group(4) == ", lease=198.51.100.10/32", line
    leases = [ln for ln in fmt.render("status", snap) if ln.startswith("lease ")]
    assert leases == ['lease 198.51.100.10 from 198.51.100.10-198.51.100.13 to '
                      '@rw\\42\' #7 \\42x\\33y "west-east" #1'], leases


def test_null_auth_peer_is_id_null_as_libreswan() -> None:
    """authby=null (RFC 7619): Libreswan 5.2 prints ``id='ID_NULL'`` (testing/pluto, 136
    trafficstatus lines), not the config spelling ``%null``; a USER_FQDN that spells
    ``%null`` stays itself (the ID type decides, not the text)."""
    kw = {"authby": "null", "leftid": "%null", "rightid": "%null"}
    net = Net(west_kw=kw, east_kw=kw)
    net.up()
    snap = _snap(net)
    (line,) = fmt.render("trafficstatus", snap)
    assert line.endswith(", id='ID_NULL'"), line
    (ike,) = snap["engine"]["ike_sas"]
    assert ike["remote_id_type"] == 13
    ike["remote_id_type"] = 3  # an RFC822 ID whose text is "%null"
    (line,) = fmt.render("trafficstatus", snap)
    assert line.endswith(", id='%null'"), line



def test_non_utf8_fqdn_from_the_wire_stays_one_ascii_line_and_valid_json() -> None:
    """An FQDN ID that is not UTF-8 (with an ESC): the text and the JSON stay valid.  The
    bad byte is U+FFFD from the wire decoder (ike/identity.py), so it shows as that
    character's UTF-8 in octal; Libreswan shows the byte itself (``\\377``)."""
    net = Net(east_kw={"left": "%any", "leftid": "%any"})
    net.west.engine.connections["west-east"].left.id = Identity(2, b"a\xff\x1b9", "@a?9")
    net.up()
    assert net.established(net.east), net.east.logs()
    snap = _snap(net)
    (line,) = fmt.render("trafficstatus", snap)
    m = TRAFFIC.match(line)
    assert m and m.group(3) == "@a\\357\\277\\275\\0339", line
    view = json.loads(json.dumps(fmt.json_view("trafficstatus", snap)))
    assert view["child_sas"][0]["remote_id"] == "@a\ufffd\x1b9"


def test_briefstatus_is_libreswans_three_lines_with_its_words() -> None:
    """Libreswan 5.2 (and 4.10) ``show_brief_status``: ``State Information``, ``IKE SAs``,
    ``IPsec SAs`` and nothing else (the connection totals belong to the connection
    list); under pressure the words are ``REQUIRED`` and ``NOT ACCEPTING``."""
    net = Net()
    net.up()
    snap = _snap(net)
    lines = fmt.render("briefstatus", snap)
    assert lines == [
        "State Information: DDoS cookies not required, Accepting new IKE connections",
        "IKE SAs: total(1), half-open(0), open(0), authenticated(1), anonymous(0)",
        "IPsec SAs: total(1), authenticated(1), anonymous(0)"], lines
    assert fmt.render("connectionstatus", snap)[-1] == \
        "Total IPsec connections: loaded 1, active 1"
    snap["engine"]["busy"] = True
    snap["engine"]["dos"].update(half_open=5, max_halfopen_ike=5)
    assert fmt.render("briefstatus", snap)[0] == \
        "State Information: DDoS cookies REQUIRED, NOT ACCEPTING new IKE connections"
    status = fmt.render("status", snap)
    assert "State Information: DDoS cookies REQUIRED, NOT ACCEPTING new IKE connections" \
        in status and "Total IPsec connections: loaded 1, active 1" in status
