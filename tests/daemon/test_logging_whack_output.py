"""Issue 13 item 3 for whack: status output of a peer-chosen ID is escaped and bounded."""

from __future__ import annotations

import dataclasses
import sys

from testsupport import REPO

from pypluto.control import format as fmt
from pypluto.textsafe import is_clean

sys.path.insert(0, str(REPO / "tests"))
from ike.harness import Net  # noqa: E402

# no NUL: an FQDN ID with a NUL is refused (Libreswan 5.2 unpack_id, test_hostile_ids24)
HOSTILE = "evil\n#9: \"admin\":500 STATE_V2_ESTABLISHED_IKE_SA\x1b[2J\x01\u202e" + "B" * 4096


def _snapshot(net: Net) -> dict:
    st = net.east.engine.status(net.now)
    return {
        "pluto": {"version": "t", "pid": 1, "uptime": 1.0, "backend": "none",
                  "helpers": 0, "helper_kind": "inline", "debug": [], "uniqueids": True,
                  "force_busy": False, "keep_alive": 20, "virtual_private": "",
                  "crl_strict": False, "crlcheckinterval": 0, "secctx_attr_type": 32001,
                  "interfaces": [], "unoriented": ["bad\nname"]},
        "now": net.now, "wallclock": 1.7e9, "engine": dataclasses.asdict(st),
    }


def test_status_lines_escape_the_peer_id() -> None:
    # east takes any ID from a peer at %any (with a fixed right=, rightid=%any is the
    # peer's address, as in Libreswan)
    net = Net(west_kw={"leftid": "@" + HOSTILE}, east_kw={"left": "%any", "leftid": "%any"})
    net.up()
    assert net.established(net.east), net.east.logs()
    snap = _snapshot(net)
    assert any(HOSTILE in i["remote_id"] for i in snap["engine"]["ike_sas"])
    for cmd in sorted(fmt.STATUS_COMMANDS):
        lines = fmt.render(cmd, snap)
        for ln in lines:
            assert is_clean(ln), (cmd, ln[:200])
            assert not ln.startswith('#9: "admin"'), (cmd, ln)
    traffic = fmt.render("trafficstatus", snap)
    # the ID in Libreswan 5.2's escapes (jam_sanitized_bytes: octal; test_status_redteam26)
    assert traffic and all("id='@evil\\n#9: \"admin\":500 STATE_V2_ESTABLISHED_IKE_SA"
                           "\\33[2J\\1\\342\\200\\256BBB" in ln for ln in traffic), traffic
    assert all(ln.endswith(" chars]'") for ln in traffic)
    status = fmt.render("status", snap)
    assert '"bad\\nname": unoriented; neither end is a local address;' in status
    # JSON keeps the exact value (json escapes control characters itself)
    view = fmt.json_view("trafficstatus", snap)
    assert view["child_sas"][0]["remote_id"] == "@" + HOSTILE


def test_guard_catches_a_field_not_escaped() -> None:
    snap = {"pluto": {"unoriented": []}, "now": 0.0, "wallclock": 0.0,
            "engine": {"connections": [], "ike_sas": [{
                "serial": 1, "conn": "c", "state": "STATE_V2_X\n#2: forged",
                "remote": "192.0.2.1:500", "local": "192.0.2.2:500",
                "children": []}]}}
    lines = fmt.render("showstates", snap)
    assert len(lines) == 1 and "\\n#2: forged" in lines[0] and is_clean(lines[0])


def test_listpsks_escapes_ids() -> None:
    class R:
        kind = "PSK"
        indices = ["@a\x1bb"]
        origin = None

    lines = fmt.render_psks([R()])
    assert any("@a\\x1bb" in ln for ln in lines)
