"""Enforce or refuse, value by value: every documented value of the enumerated and
structured ipsec.conf keys (Libreswan 5.2) either does what it means or refuses the conn.

The table below reads each value through the parser (real ``ipsec.conf`` text) and
checks one of:

- ``works:FIELD=VALUE``: the conn loads and its Connection field (``left.protoport``
  for an end) holds what the engine acts on; the tests after the table prove the
  effect in the engine harness where a spelling used to reach it unnormalised;
- ``warns:TEXT``: the conn loads and a warning says what happens instead (an obsolete
  key, as Libreswan 5.2 does);
- ``refused:TEXT``: the conn is not loaded (or the file is invalid) and the diagnostic
  is ``f:LINE: ... TEXT ...`` with LINE the line of the key under test (the last one).

Facts about Libreswan 5.2 (keywords.c, option_names.c, confread.c, connections.c, the
ipsec.conf(5) pages and the algparse test) are restated here, not copied.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
from ike.harness import Net  # tests/ is on sys.path (tests/conftest.py)

from pypluto.config.parser import parse_config_text
from pypluto.ike.settings import EngineSettings

BASE = "conn c\n\tleft=192.0.2.1\n\tright=192.0.2.2\n"
AUTH = "\tauthby=secret\n"

# (the key lines under test, the last one being the key whose line a refusal names;
#  expected outcome)
ROWS: list[tuple[str, str]] = [
    # --- authby= (confread.c's words; signatures: see the engine tests at the end) ----
    ("authby=secret", "works:authby='secret'"),
    ("authby=rsasig", "works:authby='rsasig'"),
    ("authby=rsa", "works:authby='rsa'"),
    ("authby=RSASIG", "works:authby='rsasig'"),
    ("authby=ecdsa", "works:authby='ecdsa'"),
    ("authby=ecdsa-sha2", "works:authby='ecdsa-sha2'"),
    ("authby=ecdsa-sha2_384", "works:authby='ecdsa-sha2_384'"),
    ("authby=rsa-sha1", "works:authby='rsa-sha1'"),
    ("authby=rsa-sha2", "works:authby='rsa-sha2'"),
    ("authby=rsa-sha2_512", "works:authby='rsa-sha2_512'"),
    ("authby=rsasig,ecdsa", "works:authby='rsasig,ecdsa'"),
    ("authby=secret,rsasig", "works:authby='secret,rsasig'"),
    ("authby=null", "works:authby='null'"),
    ("authby=never", "refused:authby=never is not supported by pypluto with type=tunnel"),
    ("type=drop\n\tauthby=never", "works:type='drop'"),
    ("authby=ecdsa-sha1", "refused:authby=ecdsa cannot use sha1"),
    ("authby=ed25519", "refused:connection authby=ed25519 value is unknown"),
    ("authby=ed448", "refused:connection authby=ed448 value is unknown"),
    ("authby=rsasig,null", "refused:null cannot be combined"),
    ("authby=secret,null", "refused:null cannot be combined"),
    ("authby=rsasig,never", "refused:never cannot be combined"),
    ("authby=rsasig-sha2", "refused:value is unknown"),
    # --- leftauth= / rightauth= (kw_auth_names) ------------------------------------
    ("leftauth=rsasig\n\trightauth=secret", "works:right.auth='secret'"),
    ("leftauth=ecdsa\n\trightauth=rsa", "works:left.auth='ecdsa'"),
    ("leftauth=psk", "refused:keyword leftauth, invalid value: psk"),
    ("leftauth=rsa-sha2", "refused:invalid value: rsa-sha2"),
    ("leftauth=eaponly", "refused:leftauth=eaponly is not supported by pypluto"),
    ("rightauth=null\n\tleftauth=secret", "refused:PSK and NULL authentication do not mix"),
    # --- keyexchange= / ikev2= --------------------------------------------------------
    ("keyexchange=ikev2", "works:keyexchange='ikev2'"),
    ("keyexchange=ike", "works:keyexchange='ikev2'"),
    ("keyexchange=ikev1", "refused:keyexchange=ikev1 is not supported by pypluto (IKEv1"),
    ("keyexchange=ikev3", "refused:keyword keyexchange, invalid value: ikev3"),
    ("ikev2=insist", "works:keyexchange='ikev2'"),
    ("ikev2=yes", "works:keyexchange='ikev2'"),
    ("ikev2=always", "works:keyexchange='ikev2'"),
    ("ikev2=permit", "refused:ikev2=permit is not supported by pypluto (IKEv1"),
    ("ikev2=no", "refused:ikev2=no is not supported by pypluto (IKEv1"),
    ("ikev2=never", "refused:ikev2=never is not supported by pypluto (IKEv1"),
    # --- type= --------------------------------------------------------------------------
    ("type=tunnel", "works:type='tunnel'"),
    ("type=transport", "works:type='transport'"),
    ("type=passthrough", "works:type='passthrough'"),
    ("type=pass", "works:type='passthrough'"),
    ("type=reject", "works:type='reject'"),
    ("type=bogus", "refused:keyword type, invalid value: bogus"),
    # --- pfs= and the other yes/no keys (yn_option_names: also 1/0) ------------------
    ("pfs=no", "works:pfs=False"),
    ("pfs=0", "works:pfs=False"),
    ("pfs=maybe", "refused:pfs=maybe: expected yes or no"),
    ("mobike=yes", "works:mobike=True"),
    ("narrowing=on", "works:narrowing=True"),
    ("sha2-truncbug=y", "works:sha2_truncbug=True"),
    ("decap-dscp=true", "works:decap_dscp=True"),
    ("encap-dscp=no", "works:encap_dscp=False"),
    ("nopmtudisc=1", "works:nopmtudisc=True"),
    ("send-no-esp-tfc=yes", "works:send_no_esp_tfc=True"),
    ("require-id-on-certificate=no", "works:require_id_on_certificate=False"),
    ("ms-dh-downgrade=yes", "works:ms_dh_downgrade=True"),
    ("compress=no", "works:compress=False"),
    ("compress=yes", "refused:compress=yes is not supported by pypluto (IPComp"),
    # --- esn= (yne_option_names: yes/no spellings, either; no 1/0) -------------------
    ("esn=yes", "works:esn='yes'"),
    ("esn=true", "works:esn='yes'"),
    ("esn=y", "works:esn='yes'"),
    ("esn=on", "works:esn='yes'"),
    ("esn=no", "works:esn='no'"),
    ("esn=false", "works:esn='no'"),
    ("esn=off", "works:esn='no'"),
    ("esn=n", "works:esn='no'"),
    ("esn=either", "works:esn='either'"),
    ("esn=1", "refused:keyword esn, invalid value: 1"),
    # replay-window=0 disables ESN (connections.c); an explicit esn=yes is refused
    ("replay-window=0", "works:esn='no'"),
    ("esn=either\n\treplay-window=0", "works:esn='no'"),
    ("replay-window=0\n\tesn=true", "refused:esn=true with replay-window=0 is not supported"),
    ("replay-window=64", "works:replay_window=64"),
    ("replay-window=99999999999", "refused:replay-window=99999999999: must be between"),
    # --- encapsulation= (yna_option_names) ----------------------------------------------
    ("encapsulation=yes", "works:encapsulation='yes'"),
    ("encapsulation=true", "works:encapsulation='yes'"),
    ("encapsulation=on", "works:encapsulation='yes'"),
    ("encapsulation=no", "works:encapsulation='no'"),
    ("encapsulation=off", "works:encapsulation='no'"),
    ("encapsulation=n", "works:encapsulation='no'"),
    ("encapsulation=auto", "works:encapsulation='auto'"),
    ("encapsulation=force", "refused:keyword encapsulation, invalid value: force"),
    # --- fragmentation= (ynf_option_names) ----------------------------------------------
    ("fragmentation=yes", "works:fragmentation='yes'"),
    ("fragmentation=true", "works:fragmentation='yes'"),
    ("fragmentation=no", "works:fragmentation='no'"),
    ("fragmentation=off", "works:fragmentation='no'"),
    ("fragmentation=false", "works:fragmentation='no'"),
    ("fragmentation=n", "works:fragmentation='no'"),
    ("fragmentation=never", "works:fragmentation='no'"),
    ("fragmentation=force", "works:fragmentation='force'"),
    ("fragmentation=insist", "works:fragmentation='force'"),
    ("fragmentation=maybe", "refused:keyword fragmentation, invalid value: maybe"),
    # --- ppk= (nppi_option_names) ----------------------------------------------------
    ("ppk=yes", "works:ppk='propose'"),
    ("ppk=propose", "works:ppk='propose'"),
    ("ppk=permit", "works:ppk='permit'"),
    ("ppk=insist", "works:ppk='insist'"),
    ("ppk=always", "works:ppk='insist'"),
    ("ppk=never", "works:ppk='no'"),
    ("ppk=off", "works:ppk='no'"),
    ("ppk=bogus", "refused:keyword ppk, invalid value: bogus"),
    # --- phase2= and the Child SA proposal keys -------------------------------------
    ("phase2=esp", "works:phase2='esp'"),
    ("phase2=default", "works:phase2='esp'"),
    ("phase2=ah", "works:phase2='ah'"),
    ("phase2=ah\n\tah=sha2_256", "works:phase2='ah'"),
    ("phase2=ah+esp", "refused:keyword phase2, invalid value: ah+esp"),
    # Libreswan has one proposal string for esp=/ah=/phase2alg=, parsed per phase2=
    ("ah=sha2_256", "refused:ah=sha2_256 needs phase2=ah"),
    ("phase2=ah\n\tesp=aes-sha2", "refused:esp=aes-sha2 needs phase2=esp"),
    ("esp=aes-sha2", "works:phase2='esp'"),
    ("esp=null-sha1", "works:phase2='esp'"),  # ESP NULL encryption: Libreswan accepts it
    ("esp=3des-md5", "works:phase2='esp'"),  # built by Libreswan 5.2 (USE_3DES, USE_MD5)
    ("esp=aes-sha2!", "works:phase2='esp'"),  # strongSwan's strict mark: ike=/esp= always are
    ("esp=aes-none", "refused:non-AEAD encryption requires an integrity algorithm"),
    ("esp=aes_gcm-sha1", "refused:AEAD encryption cannot have an integrity algorithm"),
    ("esp=aes-sha1;modp1024", "refused:'modp1024' is not supported"),
    ("esp=aes-sha1;dh22", "refused:'dh22' is not supported"),
    ("esp=aes-sha1-dh23", "refused:'dh23' is not supported"),
    ("esp=aes-sha1-dh24", "refused:'dh24' is not supported"),
    ("esp=des-sha1", "refused:'des' is not recognized"),
    ("esp=blowfish", "refused:'blowfish' is not recognized"),
    ("esp=aes512-sha1", "refused:wrong encryption key length 512"),
    ("ike=aes-sha2;dh19", "works:phase2='esp'"),
    ("ike=3des-sha1", "works:phase2='esp'"),
    ("ike=aes-md5", "works:phase2='esp'"),
    ("ike=aes-sha1-modp1536", "works:phase2='esp'"),
    ("ike=aes-sha1-modp1024", "refused:'modp1024' is not supported"),
    ("ike=aes-sha1;dh2", "refused:'dh2' is not supported"),
    ("ike=aes-sha1-modp768", "refused:'modp768' is not supported"),
    ("ike=aes-sha2;dh14;addke1=dh22", "refused:'dh22' is not supported"),
    ("ike=null-sha2", "refused:IKE encryption algorithm 'null' is not supported"),
    ("ike=aes-none-sha2", "refused:non-AEAD encryption needs integrity"),
    ("ike=aes-sha2;none", "refused:'NONE' not permitted"),
    ("phase2=ah\n\tah=md5", "works:phase2='ah'"),
    ("phase2=ah\n\tah=none", "refused:AH proposal 'none' needs an integrity algorithm"),
    ("phase2=ah\n\tah=aes_gcm", "refused:AH integrity algorithm 'aes_gcm' is not recognized"),
    # --- NIC offload, ikepad, enable-tcp ---------------------------------------------
    ("nic-offload=no", "works:phase2='esp'"),
    ("nic-offload=yes", "refused:nic-offload=yes is not supported by pypluto (NIC offload"),
    ("nic-offload=crypto", "refused:nic-offload=crypto is not supported by pypluto"),
    ("nic-offload=packet", "refused:nic-offload=packet is not supported by pypluto"),
    ("ikepad=yes", "works:phase2='esp'"),  # IKEv2 ignores ikepad= (ipsec.conf(5))
    ("ikepad=no", "warns:IKEv2 connection ignores ikepad=no"),  # Libreswan 5.2 too
    ("enable-tcp=yes", "refused:enable-tcp=yes is not supported by pypluto (IKE over TCP"),
    # --- shunts --------------------------------------------------------------------------
    ("failureshunt=none", "works:failureshunt='none'"),
    ("failureshunt=passthrough", "works:failureshunt='passthrough'"),
    ("failureshunt=drop", "works:failureshunt='drop'"),
    ("failureshunt=reject", "works:failureshunt='reject'"),
    ("failureshunt=hold", "refused:failureshunt=hold is not supported by pypluto"),
    ("negotiationshunt=hold", "works:negotiationshunt='hold'"),
    ("negotiationshunt=passthrough", "works:negotiationshunt='passthrough'"),
    ("negotiationshunt=reject", "refused:keyword negotiationshunt, invalid value: reject"),
    ("dpdaction=restart", "warns:dpdaction=restart: obsolete keyword ignored"),
    # --- auto= -------------------------------------------------------------------------
    ("auto=add", "works:auto='add'"),
    ("auto=start", "works:auto='start'"),
    ("auto=up", "works:auto='start'"),
    ("auto=route", "works:auto='ondemand'"),
    ("auto=ondemand", "works:auto='ondemand'"),
    ("auto=ignore", "works:auto='ignore'"),
    ("auto=keep", "works:auto='keep'"),
    ("auto=bogus", "refused:keyword auto, invalid value: bogus"),
    # --- protoport, subnets, hosts ---------------------------------------------------
    ("leftprotoport=17/1701", "works:left.protoport=(17, 1701)"),
    ("leftprotoport=tcp/%any", "works:left.protoport=(6, 0)"),
    ("leftprotoport=icmp/2048", "works:left.protoport=(1, 2048)"),
    ("leftprotoport=udp/99999", "refused:port 99999 is out of range"),
    ("leftprotoport=xyz", "refused:unknown protocol 'xyz'"),
    ("leftsubnet=%priv", "refused:'%priv' is not a subnet"),
    ("leftsubnet=vhost:%priv", "refused:The vnet: and vhost: keywords are only valid for IKEv1"),
    ("leftsendcert=always", "works:left.sendcert='always'"),
    ("leftsendcert=never", "works:left.sendcert='never'"),
    ("leftsendcert=yes", "refused:keyword leftsendcert, invalid value: yes"),
    ("sendca=issuer", "works:sendca='issuer'"),
    ("sendca=bogus", "refused:keyword sendca, invalid value: bogus"),
    ("tfc=1500", "works:tfc=1500"),
    ("tfc=-1", "refused:tfc=-1: expected a number"),
    ("hostaddrfamily=ipv4", "works:hostaddrfamily=4"),
    ("hostaddrfamily=ipv6", "refused:hostaddrfamily=ipv6 but left=192.0.2.1 is IPv4"),
]

# left= / right= values: (the end's line, expected); the other end is an address
HOST_ROWS: list[tuple[str, str]] = [
    ("left=%defaultroute", "works:left.host='%defaultroute'"),
    ("right=%any", "works:right.host='%any'"),
    ("right=%any6", "works:right.host='%any6'"),
    ("right=vpn.example.org", "works:right.host='vpn.example.org'"),
    ("right=%opportunistic", "refused:right=%opportunistic is not supported by pypluto "
                             "(opportunistic"),
    ("right=%opportunisticgroup", "refused:opportunistic IPsec and policy-group conns"),
    ("right=%oppogroup", "refused:opportunistic IPsec and policy-group conns"),
    ("right=%group", "refused:opportunistic IPsec and policy-group conns"),
    ("left=%oppo", "refused:opportunistic IPsec and policy-group conns"),
    ("left=%eth0", "refused:left=%eth0 is not supported by pypluto (pypluto takes no "
                   "address from an interface name"),
    ("right=%any4", "refused:right=%any4 is not supported by pypluto"),
    ("right=%none", "refused:right=%none is not supported by pypluto"),
]


def _parse(text: str) -> Any:
    return parse_config_text(text, "f")


def _field(conn: Any, path: str) -> Any:
    obj = conn
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _check(text: str, expected: str) -> None:
    line = text.count("\n")  # the last line of the text is the key under test
    cfg = _parse(text)
    shown = [str(d) for d in cfg.diagnostics]
    how, _, what = expected.partition(":")
    if how in ("works", "warns"):
        assert "c" in cfg.conns, shown
        if how == "works":
            name, _, want = what.partition("=")
            assert _field(cfg.conns["c"], name) == ast.literal_eval(want), shown
            assert not [d for d in cfg.diagnostics if d.severity == "error"], shown
        else:
            assert any(d.severity == "warning" and what in str(d) for d in cfg.diagnostics), \
                shown
        return
    assert how == "refused", expected
    assert "c" not in cfg.conns, f"loaded: {text!r}"
    hits = [s for s in shown if what in s]
    assert hits, shown
    assert hits[0].startswith(f"f:{line}: "), hits


@pytest.mark.parametrize(("lines", "expected"), ROWS, ids=[r[0] for r in ROWS])
def test_conn_value(lines: str, expected: str) -> None:
    both = "leftauth=" in lines and "rightauth=" in lines
    auth = "" if both or "authby=" in lines else AUTH
    _check(BASE + auth + "\t" + lines + "\n", expected)


@pytest.mark.parametrize(("line", "expected"), HOST_ROWS, ids=[r[0] for r in HOST_ROWS])
def test_host_value(line: str, expected: str) -> None:
    side = line.split("=")[0]
    other = "right=192.0.2.2" if side == "left" else "left=192.0.2.1"
    _check(f"conn c\n{AUTH}\t{other}\n\t{line}\n", expected)


SETUP_ROWS: list[tuple[str, str]] = [
    ("ddos-mode=busy", "works:ddos_mode='busy'"),
    ("ddos-mode=unlimited", "works:ddos_mode='unlimited'"),
    ("ddos-mode=bogus", "refused:keyword ddos-mode, invalid value: bogus"),
    ("uniqueids=no", "works:uniqueids=False"),
    ("uniqueids=perhaps", "refused:uniqueids=perhaps: expected yes or no"),
    ("ikev1-policy=drop", "works:raw={'ikev1-policy': 'drop'}"),
    ("ikev1-policy=accept", "refused:ikev1-policy=accept is not supported by pypluto"),
    ("ocsp-method=post", "works:ocsp_method='post'"),
    ("ocsp-method=put", "refused:keyword ocsp-method, invalid value: put"),
    ("seccomp=enabled", "refused:seccomp=enabled is not supported by pypluto"),
    ("listen-tcp=yes", "refused:listen-tcp=yes is not supported by pypluto"),
]


@pytest.mark.parametrize(("line", "expected"), SETUP_ROWS, ids=[r[0] for r in SETUP_ROWS])
def test_setup_value(line: str, expected: str) -> None:
    cfg = _parse(f"config setup\n\t{line}\n")
    shown = [str(d) for d in cfg.diagnostics]
    how, _, what = expected.partition(":")
    if how == "works":
        name, _, want = what.partition("=")
        assert cfg.ok and _field(cfg.setup, name) == ast.literal_eval(want), shown
        return
    assert not cfg.ok and any(s.startswith("f:2: ") and what in s for s in shown), shown


def test_plutodebug_unknown_class_stops_pluto_and_conn_debug_refuses_the_conn() -> None:
    """plutodebug= / debug= classes are checked where they are used: an unknown class
    in config setup is an option error (pluto does not start), in a conn it refuses the
    conn when it is added (daemon/server.py); the known ones parse."""
    from pypluto.daemon.logger import parse_debug_specs

    assert _parse("config setup\n\tplutodebug=\"base cpu-usage\"\n").setup.plutodebug == \
        ["base", "cpu-usage"]
    assert parse_debug_specs(["base, cpu-usage"], set()) == {"base", "cpu-usage"}
    with pytest.raises(ValueError, match="bogus"):
        parse_debug_specs(["bogus"], set())


# --------------------------------------------------------------------------------------
# the effect in the engine of the spellings fixed above (these failed before the fix:
# true/on/y and false/off/n reached the engine as written, which compares with yes/no)

def _conn_kw(lines: str, *names: str) -> dict[str, Any]:
    cfg = _parse(BASE + AUTH + "\t" + lines.replace("\n", "\n\t") + "\n")
    assert "c" in cfg.conns, [str(d) for d in cfg.diagnostics]
    return {n: getattr(cfg.conns["c"], n) for n in names}


@pytest.mark.parametrize(("mine", "peer", "up", "esn"), [
    ("esn=true", "yes", True, True),
    ("esn=true", "no", False, None),   # esn=true is esn=yes: no ESN-less SA
    ("esn=off", "yes", False, None),   # esn=off is esn=no
    ("esn=off", "no", True, False),
    ("replay-window=0", "yes", False, None),  # no replay window: no ESN (Libreswan)
    ("replay-window=0", "either", True, False),
])
def test_esn_spellings_and_replay_window_zero_reach_the_child_sa(
        mine: str, peer: str, up: bool, esn: bool | None) -> None:
    kw = _conn_kw(mine, "esn", "replay_window")
    net = Net(west_kw=kw, east_kw={"esn": peer})
    net.up()
    assert bool(net.children(net.east)) == up, net.west.logs() + net.east.logs()
    if up:
        assert {sa.esn for sa in net.west.kernel_sas.values()} == {esn}


@pytest.mark.parametrize("value", ["true", "on", "y"])
def test_encapsulation_yes_spellings_encapsulate_without_a_nat(value: str) -> None:
    kw = _conn_kw(f"encapsulation={value}", "encapsulation")
    net = Net(west_kw=kw)
    net.up()
    sas = list(net.west.kernel_sas.values()) + list(net.east.kernel_sas.values())
    assert sas and all(s.encapsulated and s.encap_dport == 4500 for s in sas)


@pytest.mark.parametrize("value", ["off", "false", "n"])
def test_fragmentation_no_spellings_send_no_fragments(value: str) -> None:
    """fragmentation=off: west does not announce RFC 7383 support, so no SKF payload
    (type 53) crosses although both sides would fragment at 160 bytes."""
    from pypluto.wire.message import parse_message

    kw = _conn_kw(f"fragmentation={value}", "fragmentation")
    st = {"west_settings": EngineSettings(fragment_size=160),
          "east_settings": EngineSettings(fragment_size=160)}
    net = Net(west_kw=kw, **st)  # type: ignore[arg-type]
    net.up()
    assert net.established(net.west) and net.children(net.east)
    assert not [d for _, d in net.sent if parse_message(d).payloads[-1].payload_type == 53]


# --------------------------------------------------------------------------------------
# authby= / rightauth= narrow which signatures the peer may use (ecdsa only ECDSA,
# rsasig no ECDSA, rsa-sha2 no SHA-1, rsa-sha2_512 only that hash): a signature that
# verifies with the peer's certificate is still refused when it is of another kind
# (ike/auth_sig.peer_scheme_refusal; the engine accepted any one before).

@pytest.mark.parametrize(("west_key", "east_key", "west_auth", "east_auth"), [
    ("rsa2048", "p256", "rsasig,ecdsa", "ecdsa"),       # RSA signature, east wants ECDSA
    ("p256", "rsa2048", "ecdsa,rsasig", "rsasig"),      # ECDSA signature, east wants RSA
    ("rsa2048", "rsa2048", "rsa-sha1", "rsa-sha2"),     # PKCS#1 v1.5 SHA-1, east wants PSS
    ("rsa2048", "rsa2048", "rsa-sha2_256", "rsa-sha2_512"),  # SHA2-256, east wants 512
])
def test_authby_narrows_the_peers_signature(tmp_path: Path, west_key: str, east_key: str,
                                            west_auth: str, east_auth: str) -> None:
    from ike.test_certs import cert_net
    from pki import PKI

    for v in (west_auth, east_auth):
        assert "c" in _parse(BASE + f"\tauthby={v}\n").conns
    pki = PKI.build("p256")
    net = cert_net(tmp_path, pki.ee("west", west_key), pki.ee("east", east_key), pki,
                   west_kw={"authby": west_auth}, east_kw={"authby": east_auth})
    net.up()
    assert not net.established(net.east)
    assert any("does not allow" in m or "is not one authby=" in m for m in net.east.logs()), \
        net.east.logs()
