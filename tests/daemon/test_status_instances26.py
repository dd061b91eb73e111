"""Red team 26: ``ipsec status`` / ``whack --connectionstatus`` list a template's instances
as connections of their own, as Libreswan 5.2 does.

Libreswan 5.2 facts (read, not copied; programs/pluto/whack_connectionstatus.c,
connections.c, testing/pluto/ikev2-redirect-06-roadwarriors/west.console.txt,
ikev2-hostpair-01/east.console.txt):

* ``show_connection_statuses`` lists every connection sorted by name, a template
  (``right=%any``) first and then its instances by serial; each line of a block starts
  with ``jam_connection_short``: ``"rw"`` or ``"rw"[1]`` -- the instance's peer address
  is NOT in the block's prefix (it is in the state and traffic lines, ``jam_connection``:
  ``#2: "rw"[1] 192.1.3.209, type=ESP ...``).
* The template stays ``unrouted`` with ``remote: %any;`` and no SA; an instance has its
  peer's address and ID, its lease as the remote selector in braces
  (``...192.1.3.209[ID]==={192.0.2.101/32}; routed-tunnel; my_ip=unset;
  their_ip=192.0.2.101;``), ``host: ... remote: PEER; established IKE SA: #1;``,
  ``conn_prio: L,32,1;``, ``their idtype: ID_...; their id=PEER-ID``, ``routing:
  routed-tunnel; owner: Child SA #2; established IKE SA: #1; established Child SA: #2;``
  and ``conn serial: $2, instantiated from: $1;``.  The owners are shown for every conn
  (``jam_connection_owners``), not only instances.
* ``Total IPsec connections: loaded N, active M``: N counts every connection, each
  instance one; M those in routing state routed-tunnel (redirect-06: two road warriors
  up, ``loaded 3, active 2``).

Ours, on purpose: an instance has no connection serial of its own, so its line is
``conn serial: $T[N], instantiated from: $T;`` (T the template's serial); and our
``newest IKE SA: #N; newest IPsec SA: #M;`` line is kept, per instance.
"""

from __future__ import annotations

import re
from typing import Any

from pypluto.config.parser import parse_config_text
from pypluto.control import format as fmt
from tests.daemon.test_status_redteam26 import _details, _hostile_net, _snap
from tests.ike.harness import Net
from tests.ike.test_hostile_roadwarrior import _up, rw_net

POOL = "198.51.100.10-198.51.100.13"


def _rw2() -> Net:
    net = rw_net(pool=POOL, clients=2)
    _up(net, "c1")
    _up(net, "c2")
    assert len(net.established(net.east)) == 2, net.east.logs()
    return net


def _blocks(lines: list[str]) -> dict[str, list[str]]:
    """Each block of the connection list by its prefix (``"west-east"[1]``), in order."""
    out: dict[str, list[str]] = {}
    for ln in lines:
        m = re.match(r'("[^"]*"(?:\[\d+\])?):', ln)
        if m:
            out.setdefault(m.group(1), []).append(ln)
    return out


def _line(block: list[str], word: str) -> str:
    (ln,) = [x for x in block if x.split(":", 1)[1].lstrip().startswith(word)]
    return ln


def test_template_and_each_instance_have_their_own_block() -> None:
    net = _rw2()
    snap = _snap(net, details=_details(net))
    for cmd in ("status", "connectionstatus"):
        blocks = _blocks(fmt.render(cmd, snap))
        assert list(blocks) == ['"west-east"', '"west-east"[1]', '"west-east"[2]'], cmd
    lines = fmt.render("connectionstatus", snap)
    blocks = _blocks(lines)
    tpl, one, two = blocks['"west-east"'], blocks['"west-east"[1]'], blocks['"west-east"[2]']
    # the template: no SA of its own, unrouted, still %any
    assert tpl[0] == ('"west-east": 203.0.113.0/24===192.0.2.2[@east.example,MS+S=C]...'
                      "%any[+MC+S=C]==={198.51.100.10-198.51.100.13}; unrouted; my_ip=unset; "
                      "their_ip=unset;")
    assert tpl[1] == '"west-east":   host: oriented; local: 192.0.2.2; remote: %any;'
    assert _line(tpl, "routing:") == '"west-east":   routing: unrouted;'
    assert not [x for x in tpl if "newest" in x or "established" in x], tpl
    # the instances: peer, ID, lease, SAs, routing
    assert one[0] == ('"west-east"[1]: 203.0.113.0/24===192.0.2.2[@east.example,MS+S=C]...'
                      "192.0.2.1[@c1.example,+MC+S=C]==={198.51.100.10/32}; routed-tunnel; "
                      "my_ip=unset; their_ip=198.51.100.10;")
    assert two[0].endswith("...192.0.2.1[@c2.example,+MC+S=C]==={198.51.100.11/32}; "
                           "routed-tunnel; my_ip=unset; their_ip=198.51.100.11;"), two[0]
    assert one[1] == ('"west-east"[1]:   host: oriented; local: 192.0.2.2; '
                      "remote: 192.0.2.1; established IKE SA: #1;")
    assert two[1].endswith("remote: 192.0.2.1; established IKE SA: #3;"), two[1]
    assert _line(one, "routing:") == (
        '"west-east"[1]:   routing: routed-tunnel; owner: Child SA #2; '
        "established IKE SA: #1; established Child SA: #2;")
    assert _line(two, "routing:").endswith(
        "owner: Child SA #4; established IKE SA: #3; established Child SA: #4;")
    assert _line(one, "newest IKE SA") == \
        '"west-east"[1]:   newest IKE SA: #1; newest IPsec SA: #2;'
    assert _line(two, "newest IKE SA").endswith("newest IKE SA: #3; newest IPsec SA: #4;")
    assert _line(one, "our idtype").endswith("their idtype: ID_FQDN; their id=@c1.example")
    assert _line(two, "our idtype").endswith("their idtype: ID_FQDN; their id=@c2.example")
    assert _line(tpl, "our idtype").endswith("their idtype: %none; their id=(none)")
    assert _line(one, "modecfg info").endswith("modecfg info: us:server, them:client, "
                                               "modecfg policy:push, dns:unset, "
                                               "domains:unset, cat:unset;")
    assert "conn_prio: 24,0,0;" in _line(tpl, "conn_prio")
    assert "conn_prio: 24,32,1;" in _line(one, "conn_prio")
    assert _line(tpl, "conn serial").endswith("conn serial: $0;")
    assert _line(two, "conn serial").endswith("conn serial: $0[2], instantiated from: $0;")
    assert _line(one, "IKEv2 algorithm newest") == \
        '"west-east"[1]:   IKEv2 algorithm newest: AES_GCM_16_256-HMAC_SHA2_512-DH19'
    assert _line(two, "ESP algorithm newest") == \
        '"west-east"[2]:   ESP algorithm newest: AES_GCM_16_256-NONE; pfsgroup=<Phase1>'
    # the template's lines, then the newest SAs and their algorithms
    assert len(one) == len(tpl) + 3
    assert lines[-1] == "Total IPsec connections: loaded 3, active 2"


def test_totals_count_instances_and_follow_them() -> None:
    """``loaded``/``active`` count instances (5.2: two road warriors up: ``loaded 3,
    active 2``), in the status, ``--globalstatus`` and the JSON; an instance that goes
    takes its block with it, the others keep their N."""
    net = _rw2()
    snap = _snap(net, details=_details(net))
    assert "Total IPsec connections: loaded 3, active 2" in fmt.render("status", snap)
    values = dict(ln.split("=", 1) for ln in fmt.render("globalstatus", snap))
    assert values["current.connections.loaded"] == "3"
    assert values["current.connections.active"] == "2"
    assert values["current.connections.routed"] == "2"  # the instances, not the template
    view = fmt.json_view("connectionstatus", snap)
    assert view["summary"]["connections"] == {"loaded": 3, "routed": 2, "active": 2}
    assert [(i["name"], i["instance"], i["remote"], i["remote_id"], i["lease"])
            for i in view["instances"]] == [
        ("west-east", 1, "192.0.2.1", "@c1.example", ["198.51.100.10/32"]),
        ("west-east", 2, "192.0.2.1", "@c2.example", ["198.51.100.11/32"])]
    assert [i["instance"] for i in fmt.json_view("status", snap)["instances"]] == [1, 2]
    # [1] leaves: [2] stays [2]
    net.apply(net.west, net.west.engine.terminate("c1", net.now))
    net.run()
    snap = _snap(net, details=_details(net))
    lines = fmt.render("connectionstatus", snap)
    assert list(_blocks(lines)) == ['"west-east"', '"west-east"[2]']
    assert lines[-1] == "Total IPsec connections: loaded 2, active 1"
    # an IKE SA rekey of [2]: the same instance, its newest IKE SA the new one
    net.apply(net.west, net.west.engine.rekey_ike("c2", net.now))
    net.run()
    snap = _snap(net, details=_details(net))
    (new_ike,) = [s["serial"] for s in snap["engine"]["ike_sas"] if s["serial"] > 4]
    lines = fmt.render("connectionstatus", snap)
    blocks = _blocks(lines)
    assert list(blocks) == ['"west-east"', '"west-east"[2]']
    assert blocks['"west-east"[2]'][1].endswith(f"established IKE SA: #{new_ike};")
    assert _line(blocks['"west-east"[2]'], "routing:").endswith(
        f"established IKE SA: #{new_ike}; established Child SA: #4;")
    assert lines[-1] == "Total IPsec connections: loaded 2, active 1"
    # all gone: the template alone, as loaded
    net.apply(net.west, net.west.engine.terminate("c2", net.now))
    net.run()
    snap = _snap(net, details=_details(net))
    lines = fmt.render("connectionstatus", snap)
    assert list(_blocks(lines)) == ['"west-east"']
    assert lines[-1] == "Total IPsec connections: loaded 1, active 0"
    assert fmt.json_view("connectionstatus", snap)["instances"] == []


def test_instance_without_a_pool_shows_its_child_selectors() -> None:
    """No pool: the remote selector is the Child SA's (the peer's subnet), no braces and
    no ``their_ip``."""
    net = Net(east_kw={"left": "%any", "leftid": "%any"})
    net.up()
    snap = _snap(net, details=_details(net))
    blocks = _blocks(fmt.render("connectionstatus", snap))
    assert list(blocks) == ['"west-east"', '"west-east"[1]']
    assert blocks['"west-east"[1]'][0].endswith(
        "...192.0.2.1[@west.example]===198.51.100.0/24; routed-tunnel; my_ip=unset; "
        "their_ip=unset;"), blocks['"west-east"[1]'][0]
    assert "conn_prio: 24,24,1;" in _line(blocks['"west-east"[1]'], "conn_prio")


def test_half_open_instance_is_negotiating() -> None:
    """After IKE_SA_INIT only (5.2 instantiates the template for the peer there): the
    instance has the peer's address, the template's remote ID (none known yet), a
    ``negotiating IKE SA`` and no route; it is loaded, not active."""
    net = Net(east_kw={"left": "%any", "leftid": "%any"})
    net.apply(net.west, net.west.engine.initiate("west-east", net.now))
    assert net.step()  # IKE_SA_INIT to east; its answer stays in flight
    snap = _snap(net, details=_details(net))
    lines = fmt.render("connectionstatus", snap)
    blocks = _blocks(lines)
    assert list(blocks) == ['"west-east"', '"west-east"[1]']
    inst = blocks['"west-east"[1]']
    assert inst[0].endswith("...192.0.2.1===198.51.100.0/24; unrouted; my_ip=unset; "
                            "their_ip=unset;"), inst[0]
    assert inst[1].endswith("remote: 192.0.2.1; negotiating IKE SA: #1;"), inst[1]
    assert _line(inst, "routing:") == \
        '"west-east"[1]:   routing: unrouted; negotiating IKE SA: #1;'
    assert _line(inst, "our idtype").endswith("their idtype: %none; their id=(none)")
    assert lines[-1] == "Total IPsec connections: loaded 2, active 0"


def test_established_conn_shows_its_owners_as_libreswan() -> None:
    """Not only instances: 5.2's ``jam_connection_owners`` on the host and routing lines
    of any conn with SAs (ikev2-hostpair-01 and 13 other consoles: ``remote: ...;
    established IKE SA: #1;``)."""
    net = Net()
    net.up()
    snap = _snap(net, side="west", details=_details(net, "west"))
    blocks = _blocks(fmt.render("connectionstatus", snap))
    (block,) = blocks.values()
    assert block[1] == ('"west-east":   host: oriented; local: 192.0.2.1; remote: 192.0.2.2; '
                        "established IKE SA: #1;")
    assert _line(block, "routing:") == (
        '"west-east":   routing: routed-tunnel; owner: Child SA #2; established IKE SA: #1; '
        "established Child SA: #2;")
    assert _line(block, "conn serial").endswith("conn serial: $0;")


def test_hostile_peer_id_stays_inside_its_instance_block() -> None:
    """A peer ID with quotes, a fake record, ANSI, bidi and a newline: every line of the
    connection list is one printable line of ``"west-east"``/``"west-east"[1]``; the
    instance's ``their id=`` is sanitized as its first line's ``[ID]``."""
    net = _hostile_net()
    snap = _snap(net, details=_details(net))
    lines = fmt.render("connectionstatus", snap)
    body = lines[:-2]
    assert body and all(ln.isprintable() for ln in body), body
    assert all(ln.startswith(('"west-east": ', '"west-east":  ', '"west-east"[1]:'))
               for ln in body), body
    inst = [ln for ln in body if ln.startswith('"west-east"[1]:')]
    their = _line(inst, "our idtype").split("their id=", 1)[1]
    assert their == "@ev'il\\x, lease=10.9.9.9/32\\33[31m\\303\\251\\342\\200\\256\"q\\t1\\n" \
        '#9: "admin"'
    assert f"[{their}]" in inst[0]
    assert lines[-1] == "Total IPsec connections: loaded 2, active 1"


def test_short_form_name_filter_and_state_lines() -> None:
    """Without the daemon's details the short form lists the instances too; ``--name``
    keeps a template's instances; the state and traffic lines keep 5.2's
    ``"conn"[N] PEER`` names."""
    net = _rw2()
    bare: dict[str, Any] = _snap(net)
    bare["pluto"]["conn_details"] = {}
    short = fmt.render("connectionstatus", bare)
    assert list(_blocks(short)) == ['"west-east"', '"west-east"[1]', '"west-east"[2]']
    assert any(ln.startswith('"west-east"[1]: ') and "===198.51.100.10/32" not in ln
               and "{198.51.100.10/32}" in ln for ln in short), short
    snap = _snap(net, details=_details(net))
    named = fmt.render("connectionstatus", fmt.only_conns(snap, {"west-east"}))
    assert list(_blocks(named)) == ['"west-east"', '"west-east"[1]', '"west-east"[2]']
    assert fmt.render("connectionstatus", fmt.only_conns(snap, {"c1"}))[-1] == \
        "Total IPsec connections: loaded 0, active 0"
    states = fmt.render("showstates", snap)
    assert any(ln.startswith('#3: "west-east"[2] 192.0.2.1:500 ESTABLISHED_IKE_SA')
               for ln in states), states
    traffic = fmt.render("trafficstatus", snap)
    assert [ln.split(",", 1)[0] for ln in traffic] == \
        ['#2: "west-east"[1] 192.0.2.1', '#4: "west-east"[2] 192.0.2.1']


def test_algorithm_newest_lines_name_algorithms_as_libreswan() -> None:
    """5.2's ``IKEv2 algorithm newest:`` (crypto.c: cipher_keylen, PRF, integrity only
    when not AEAD and not the PRF's hash, group) and ``ESP algorithm newest:
    CIPHER_KEYLEN-INTEG; pfsgroup=`` (plutoalg.c: ``<Phase1>`` with PFS, ``<N/A>``
    without), by the names of its consoles (``3DES_CBC_192-HMAC_MD5-MODP2048``,
    ``AES_CBC_128-HMAC_SHA1_96``, ``DH19``)."""
    cases = [
        ({"ike": "aes256-sha2_512-modp2048", "esp": "aes128-sha1"},
         "AES_CBC_256-HMAC_SHA2_512-MODP2048", "AES_CBC_128-HMAC_SHA1_96; pfsgroup=<Phase1>"),
        ({"ike": "3des-md5-modp2048", "esp": "3des-md5", "pfs": False},
         "3DES_CBC_192-HMAC_MD5-MODP2048", "3DES_CBC_192-HMAC_MD5_96; pfsgroup=<N/A>"),
        ({"ike": "aes128-sha1-sha2_256-dh20"},
         "AES_CBC_128-HMAC_SHA2_256-HMAC_SHA1_96-DH20", "AES_GCM_16_256-NONE; pfsgroup=<Phase1>"),
        ({"ike": "chacha20_poly1305-sha2-dh31", "esp": "chacha20_poly1305"},
         "CHACHA20_POLY1305_256-HMAC_SHA2_256-DH31",
         "CHACHA20_POLY1305_256-NONE; pfsgroup=<Phase1>"),
    ]
    for kw, ike, esp in cases:
        net = Net(west_kw=kw, east_kw=kw)
        net.up()
        lines = fmt.render("connectionstatus", _snap(net, details=_details(net)))
        assert f'"west-east":   IKEv2 algorithm newest: {ike}' in lines, (kw, lines)
        assert f'"west-east":   ESP algorithm newest: {esp}' in lines, (kw, lines)
    idle = fmt.render("connectionstatus", _snap(Net(), details=_details(Net())))
    assert not [ln for ln in idle if "algorithm newest" in ln or "established" in ln]


GATEWAYS = """\
conn rw2
\tauthby=secret
\tleft=192.0.2.2
\tleftid=@west
\tleftsubnet=0.0.0.0/0
\tright=%any
\trightid=%any
\trightaddresspool=198.51.100.20-198.51.100.23
\tauto=add

conn rw3
\tauthby=secret
\tleft=192.0.2.2
\tleftid=@west
\tleftsubnet=0.0.0.0/0
\tright=%any
\trightid=@road
\trightaddresspool=198.51.100.30-198.51.100.40
\tmodecfgdns="1.2.3.4, 8.8.8.8"
\tmodecfgdomains="example.com foo.example"
\tmodecfgpull=yes
\trightsendcert=never
\tauto=add

conn plain
\tauthby=secret
\tleft=192.0.2.2
\tleftid=@west
\tleftsendcert=sendifasked
\tright=192.0.2.7
\trightid=@seven
\tauto=add
"""


def test_gateway_templates_show_their_pool_and_mode_config_as_libreswan() -> None:
    """A road-warrior gateway's templates, as Libreswan 5.2 showed the same conns (run
    side by side with the Debian 13 build, ``../shared/interop/trixie``): an address
    pool makes our end the mode config server (``MS``, ``us:server``) and the peer its
    client (``+MC``, ``them:client``), is shown in braces (a CIDR block as one,
    ``{198.51.100.20/30}``, whose prefix is the remote ``conn_prio``) and implies
    ``IKEV2_ALLOW_NARROWING``; ``sendcert=`` shows as ``+S=C`` / ``+S?C`` / ``+S-C``;
    ``modecfgpull=yes`` is ``MODECFG_PULL`` and ``modecfg policy:pull``; no peer ID is
    ``their idtype: %none``."""
    cfg = parse_config_text(GATEWAYS)
    net = Net()
    for conn in cfg.conns.values():
        conn.local_is_left = True
        net.apply(net.east, net.east.engine.add_connection(conn))
    blocks = _blocks(fmt.render("connectionstatus", _snap(net, details=_details(net))))
    rw2, rw3, plain = blocks['"rw2"'], blocks['"rw3"'], blocks['"plain"']
    assert rw2[0] == ('"rw2": 0.0.0.0/0===192.0.2.2[@west,MS+S=C]...%any[+MC+S=C]==='
                      "{198.51.100.20/30}; unrouted; my_ip=unset; their_ip=unset;")
    assert "conn_prio: 0,30,0;" in _line(rw2, "conn_prio")
    assert _line(rw2, "policy:") == ('"rw2":   policy: IKEv2+PSK+ENCRYPT+TUNNEL+PFS+'
                                     "IKEV2_ALLOW_NARROWING+IKE_FRAG_ALLOW+ESN_NO+ESN_YES;")
    assert _line(rw2, "our idtype").endswith("their idtype: %none; their id=(none)")
    assert rw3[0] == ('"rw3": 0.0.0.0/0===192.0.2.2[@west,MS+S=C]...%any[@road,+MC+S-C]==='
                      "{198.51.100.30-198.51.100.40}; unrouted; my_ip=unset; their_ip=unset;")
    assert _line(rw3, "modecfg info") == (
        '"rw3":   modecfg info: us:server, them:client, modecfg policy:pull, dns:1.2.3.4, '
        "8.8.8.8, domains:example.com,foo.example, cat:unset;")
    assert "+MODECFG_PULL+IKEV2_ALLOW_NARROWING+" in _line(rw3, "policy:")
    assert "conn_prio: 0,0,0;" in _line(rw3, "conn_prio")
    assert plain[0] == ('"plain": 192.0.2.2[@west,+S?C]...192.0.2.7[@seven]; unrouted; '
                        "my_ip=unset; their_ip=unset;")
    assert _line(plain, "modecfg info").startswith('"plain":   modecfg info: us:none, them:none,')
    assert "NARROWING" not in _line(plain, "policy:")
