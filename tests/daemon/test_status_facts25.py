"""Operator-visible facts that were counted or known but never shown.

1. The userspace plane's drops (an unknown SPI, a runt, a keepalive, no policy...;
   per SA: replay, integrity, selector, malformed) reach ``whack --globalstatus`` as
   ``total.ipsec.drops.*`` lines (ours: Libreswan 5.2 prints none, its XFRM counters
   stay in ``/proc/net/xfrm_stat`` which ``--globalstatus`` does not read:
   testing/pluto/whack-globalstatus-01/west.console.txt) and the status JSON; per SA
   only the JSON carries them (``--trafficstatus`` text stays Libreswan's).
2. ``PLUTO_PEER_CA``: Libreswan 5.2 (programs/pluto/updown.c) gives the updown script
   the issuer DN of the peer's certificate, in its DN style (``C=.., O=.., CN=..``, the
   certificate's order); it was always empty here.
3. ``ipsec --version``: see :func:`test_version_banner_is_ours_and_parseable`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from pki import PKI
from plutoproc import wait_for
from test_daemon_pair import child_sas, pair, userspace_udp_tunnel  # noqa: F401  (fixture)

import pypluto
from pypluto.cli import ipsec as ipsec_cli
from pypluto.cli import whack as whack_cli
from pypluto.config import ids
from pypluto.control import format as fmt
from pypluto.daemon import options
from pypluto.daemon.updown import Verb, updown_env
from pypluto.ike.actions import Updown
from tests.ike.harness import Net, Side
from tests.ike.test_certs import cert_net

# ----------------------------------------------------------------------------- item 1


def _snap(net: Net, side: Side, plane: dict[str, int] | None = None,
          gone: dict[str, int] | None = None) -> dict[str, Any]:
    eng = dataclasses.asdict(side.engine.status(net.now))
    return {"pluto": {"uptime": 1.0}, "now": net.now, "wallclock": 1e9, "engine": eng,
            "counters": {"ipsec_drops_gone": gone or {}}, "totals": {},
            "plane": plane or {}}


def test_globalstatus_shows_the_planes_and_the_sas_drops() -> None:
    """``total.ipsec.drops.REASON``: the live SAs' drops plus those of deleted SAs plus
    the plane's own; the text and the ``--json`` ``values`` carry the same numbers and
    the raw plane counters are in the JSON (``plane``)."""
    net = Net()
    net.up()
    snap = _snap(net, net.west,
                 plane={"unknown_spi": 7, "malformed": 2, "keepalives": 5, "no_policy": 3,
                        "shunted": 1, "hold_dropped": 4, "held": 9, "send_errors": 0,
                        "tun_write_errors": 0},
                 gone={"replay_drops": 10, "malformed": 1})
    (ch,) = snap["engine"]["ike_sas"][0]["children"]
    ch.update(replay_drops=2, integrity_failures=6, selector_drops=None, malformed=3)
    lines = fmt.render("globalstatus", snap)
    v = dict(ln.split("=", 1) for ln in lines)
    assert v["total.ipsec.drops.replay"] == "12"  # 2 live + 10 of deleted SAs
    assert v["total.ipsec.drops.integrity"] == "6"
    assert v["total.ipsec.drops.malformed"] == "6"  # 3 live + 1 gone + 2 runts
    assert "total.ipsec.drops.selector" not in v  # not counted per SA: no fake 0
    assert v["total.ipsec.drops.unknown_spi"] == "7"
    assert v["total.ipsec.drops.no_policy"] == "3"
    assert v["total.ipsec.drops.shunted"] == "1"
    assert v["total.ipsec.drops.hold_overflow"] == "4"
    assert v["total.ipsec.keepalives.recv"] == "5"
    assert v["total.ipsec.held"] == "9"
    # Libreswan's own lines come first and unchanged: ours follow its total.* block
    keys = [ln.split("=", 1)[0] for ln in lines]
    assert keys.index("total.ipsec.drops.replay") > keys.index("total.ike.traffic.out")
    j = fmt.json_view("globalstatus", snap)
    assert j["values"]["total.ipsec.drops.unknown_spi"] == 7
    assert j["plane"]["keepalives"] == 5


def test_without_a_plane_counter_no_drop_lines_are_invented() -> None:
    """The ``none`` / XFRM backends keep no plane counters: no plane lines; the per-SA
    ones only where the SAs count (here: nothing counted at all)."""
    net = Net()
    net.up()
    snap = _snap(net, net.west)
    assert not [ln for ln in fmt.render("globalstatus", snap) if ".drops." in ln]


def test_trafficstatus_text_is_libreswans_and_the_json_has_the_sas_drops() -> None:
    net = Net()
    net.up()
    snap = _snap(net, net.west)
    (ch,) = snap["engine"]["ike_sas"][0]["children"]
    before = fmt.render("trafficstatus", snap)
    ch.update(replay_drops=1, integrity_failures=2, selector_drops=3, malformed=4)
    assert fmt.render("trafficstatus", snap) == before
    assert "drop" not in before[0] and "malformed" not in before[0]
    (row,) = fmt.json_view("trafficstatus", snap)["child_sas"]
    assert (row["replay_drops"], row["integrity_failures"], row["selector_drops"],
            row["malformed"]) == (1, 2, 3, 4)


def _send(ns, payload: bytes, dst: str = "192.0.2.2", port: int = 4500) -> None:  # type: ignore[no-untyped-def]
    """One UDP datagram from inside ``ns`` (a throw-away python: the socket must live in
    the namespace)."""
    code = ("import socket,sys;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);"
            f"s.sendto(bytes.fromhex(sys.argv[1]),({dst!r},{port}))")
    ns.run("python3", "-c", code, payload.hex())


def _status_json(p, cmd: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    r = p.whack(f"--{cmd}", "--json")
    assert r.returncode == 0, r.stdout
    out: dict[str, Any] = json.loads(r.stdout)
    return out


@pytest.mark.netns
def test_userspace_pair_drops_reach_globalstatus_and_json(pair):  # noqa: F811
    """A real pair on the userspace plane, ESP in UDP: an unknown SPI, a runt, a NAT
    keepalive and a short packet with the live inbound SPI sent to east on port 4500
    are counted where an operator sees them (and one packet with a wrong ICV)."""
    _, w_ns, _ = pair
    west, east = userspace_udp_tunnel(pair)
    wait_for(lambda: child_sas(east), 10, "east's Child SA")
    st = _status_json(east, "status")
    spi_in = st["ike_sas"][0]["children"][0]["spi_in"]
    base = _status_json(east, "globalstatus")["values"]
    assert base["total.ipsec.drops.unknown_spi"] == 0
    _send(w_ns, b"\xde\xad\xbe\xef" + bytes(60))  # an SPI nobody has
    _send(w_ns, b"\xff")  # NAT keepalive (RFC 3948 §2.3)
    _send(w_ns, b"\x01\x02\x03")  # too short to be anything
    spi = spi_in.to_bytes(4, "big")
    _send(w_ns, spi + (1 << 30).to_bytes(4, "big") + bytes(2))  # ours, but truncated
    _send(w_ns, spi + (1 << 29).to_bytes(4, "big") + bytes(96))  # ours, a wrong ICV

    def counted() -> bool:
        v = _status_json(east, "globalstatus")["values"]
        return v["total.ipsec.drops.unknown_spi"] >= 1 and \
            v["total.ipsec.keepalives.recv"] >= 1 and \
            v["total.ipsec.drops.malformed"] >= 2 and v["total.ipsec.drops.integrity"] >= 1
    wait_for(counted, 10, "drops counted: " + json.dumps(
        _status_json(east, "globalstatus")["plane"]))
    g = _status_json(east, "globalstatus")
    assert g["plane"]["unknown_spi"] >= 1 and g["plane"]["keepalives"] >= 1
    text = east.whack("--globalstatus").stdout.splitlines()
    assert sorted(ln.split("=", 1)[0] for ln in text) == sorted(g["values"])
    (row,) = child_sas(east)
    assert row["malformed"] >= 1 and row["integrity_failures"] >= 1
    assert _status_json(east, "status")["plane"]["unknown_spi"] >= 1
    # the trafficstatus text keeps Libreswan's fields only
    (line,) = east.whack("--trafficstatus").stdout.splitlines()
    assert "malformed" not in line and "drop" not in line
    # an SA's drops stay counted after it is gone
    r = west.whack("--name", "west-east", "--terminate")
    assert r.returncode == 0, r.stdout
    wait_for(lambda: not child_sas(east), 10, "Child SA gone")
    v = _status_json(east, "globalstatus")["values"]
    assert v["total.ipsec.drops.integrity"] >= 1 and v["total.ipsec.drops.malformed"] >= 2


# ----------------------------------------------------------------------------- item 2


def _up_facts(net: Net, side: Side):  # type: ignore[no-untyped-def]
    return next(a for a in side.actions if isinstance(a, Updown) and a.up).child


def test_updown_gets_the_peers_ca(tmp_path: Path) -> None:
    """PLUTO_PEER_CA is the issuer of the certificate the peer authenticated with (here
    the intermediate CA), in Libreswan's DN style, on both ends.  Libreswan 5.2 finds it
    only among RSA public keys (updown.c), so an ECDSA peer (as here) gets an empty one
    there; its documentation (libreswan.7: "the peer's CA") names no key type, and the
    CA is a fact of the certificate, not of its key: we give it for every key type."""
    pki = PKI.build()
    net = cert_net(tmp_path, pki.ee("west"), pki.ee("east"), pki)
    for side in (net.west, net.east):
        side.engine.connections["west-east"].local.updown = "/bin/true"
    net.up()
    want = ids.dn_text(pki.inter.cert.subject)
    assert want == "C=CH, O=pypluto test, CN=pypluto test intermediate"
    for side in (net.west, net.east):
        facts = _up_facts(net, side)
        assert facts.peer_ca == want
        assert updown_env(Verb.UP, facts)["PLUTO_PEER_CA"] == want


def test_updown_peer_ca_is_empty_without_a_certificate() -> None:
    """PSK: no certificate, no CA (Libreswan: an empty PLUTO_PEER_CA='')."""
    net = Net()
    for side in (net.west, net.east):
        side.engine.connections["west-east"].local.updown = "/bin/true"
    net.up()
    facts = _up_facts(net, net.west)
    assert facts.peer_ca == "" and updown_env(Verb.UP, facts)["PLUTO_PEER_CA"] == ""


# ----------------------------------------------------------------------------- item 3


def _major_after_libreswan(banner: str) -> int:
    """How NetworkManager-libreswan reads ``ipsec --version`` (its
    nm_libreswan_detect_version, described, not copied): the first "Libreswan" in any
    case, then blanks, an optional "U", then one digit is the major version (-1 if
    none); it picks its ipsec.conf syntax by that number."""
    low = banner.lower()
    i = low.find("libreswan")
    if i < 0:
        return -1
    rest = banner[i + len("libreswan"):].lstrip()
    rest = rest[1:] if rest.startswith("U") else rest
    return int(rest[0]) if rest[:1].isdigit() else -1


def test_version_banner_is_ours_and_parseable(capsys: pytest.CaptureFixture[str]) -> None:
    """Libreswan 5.2 prints ``Libreswan 5.2`` for ``ipsec version`` / ``--version`` /
    ``--versioncode`` (programs/ipsec/ipsec.in) and ``whack --version``
    (ipsec_version_string()).  We cannot print that: it would claim to be Libreswan's
    binary.  The old ``Libreswan-compatible pypluto 0.1.0`` was honest but broke the
    one consumer we know parses it, NetworkManager-libreswan: after "Libreswan" it found
    "-", so the version was -1 and it fell back to its oldest config syntax.  Decision:
    our name and version first, then ``(Libreswan 5.2 compatible)``: honest, and the
    major number after the first "Libreswan" is the release whose interface we follow
    (5).  ``awk '{print $2}'`` style scripts get our version."""
    for main, argv in ((ipsec_cli.main, ["--version"]), (ipsec_cli.main, ["version"]),
                       (ipsec_cli.main, ["--versioncode"]), (whack_cli.main, ["--version"])):
        assert main(argv) == 0
        out = capsys.readouterr().out.strip()
        assert out == pypluto.VERSION_BANNER, argv
        assert out.startswith(f"pypluto {pypluto.__version__} ")
        assert not out.startswith("Libreswan")  # never Libreswan's own banner
        assert _major_after_libreswan(out) == 5
        assert out.split()[1] == pypluto.__version__
    kind, text = options.parse_args(["--version"])
    assert kind == "version" and isinstance(text, str)
    assert text.startswith(pypluto.VERSION_BANNER) and _major_after_libreswan(text) == 5
    # the old banner: what NetworkManager-libreswan could not read
    assert _major_after_libreswan(f"Libreswan-compatible pypluto {pypluto.__version__}") == -1
