"""Every ipsec.conf keyword is accounted for (issue 12 item 7).

The registry (``config/keywords.py``) holds exactly Libreswan 5.2's keywords
(``lib/libipsecconf/keywords.c`` at tag v5.2; the names are listed below as facts).
Each one works (a named test proves it), works for some values (the others refuse
the conn), is obsolete as Libreswan says (a warning saying what happens instead), or
is refused (``file:line: KEY is not supported by pypluto``).  Nothing is parsed and
ignored.
"""

from __future__ import annotations

import io
import ipaddress
import pathlib
import re

import pytest

from pypluto.config import keywords as K
from pypluto.config.commands import addconn_main
from pypluto.config.parser import build_connection, parse_config_text

ROOT = pathlib.Path(__file__).resolve().parents[2]

# Libreswan 5.2's keyword names (kv_config / kv_conn / kv_leftright entries).  The
# conn key "dns-match-id," carries a stray comma there; we register "dns-match-id".
LIBRESWAN_52_SETUP = set("""
audit-log crl-strict crlcheckinterval curl-iface curl-timeout ddos-ike-threshold ddos-mode
debug dnssec-anchors dnssec-enable dnssec-rootkey-file drop-oppo-null dumpdir
global-redirect global-redirect-to ike-socket-bufsize ike-socket-errqueue ikev1-policy
ikev1-secctx-attr-type interfaces ipsec-interface-managed ipsecdir keep-alive listen
listen-tcp listen-udp logappend logfile logip logtime max-halfopen-ike myvendorid nflog-all
nhelpers nssdir ocsp-cache-max-age ocsp-cache-min-age ocsp-cache-size ocsp-enable
ocsp-method ocsp-strict ocsp-timeout ocsp-trustname ocsp-uri plutodebug plutostderrlog
protostack seccomp secctx-attr-type secretsfile seedbits shuntlifetime statsbin syslog
uniqueids virtual-private virtual_private xfrmlifetime
""".split())
LIBRESWAN_52_CONN = set("""
accept-redirect accept-redirect-to aggressive aggrmode ah also authby auto cisco-unity
clientaddrfamily compress connalias debug decap-dscp dns-match-id dpdaction dpddelay
dpdtimeout enable-tcp encap-dscp encapsulation esn esp failureshunt fake-strongswan
fragmentation hostaddrfamily ignore-peer-dns ike ikelifetime ikepad ikev1-dpdtimeout ikev2
initial-contact intermediate ipsec-interface ipsec-lifetime ipsec-max-bytes
ipsec-max-packets iptfs iptfs-drop-time iptfs-fragmentation iptfs-init-delay
iptfs-max-queue-size iptfs-packet-size iptfs-reorder-window keyexchange keyingtries keylife
lifetime mark mark-in mark-out metric mobike modecfgbanner modecfgdns modecfgdomains
modecfgpull ms-dh-downgrade mtu narrowing nat-ikev1-method nat-keepalive negotiationshunt
nflog nic-offload nm-configured nopmtudisc overlapip pam-authorize pfs pfs-rekey-workaround
phase2 phase2alg plutodebug policy-label ppk ppk-ids priority reauth redirect-to rekey
rekeyfuzz rekeymargin remote-peer-type remote_peer_type replay-window reqid
require-id-on-certificate retransmit-interval retransmit-timeout salifetime sec-label
send-no-esp-tfc send-redirect send-vendorid sendca session-resumption sha2-truncbug
tcp-remoteport tfc type vti-interface vti-routing vti-shared xauthby xauthfail
""".split())
LIBRESWAN_52_SIDE = set("""
addresspool auth autheap ca cat cert ckaid ecdsakey groundhog id ikeport interface-ip
modecfgclient modecfgserver nexthop protoport pubkey rsasigkey sendcert sourceip subnet
subnets updown username vti xauthclient xauthserver xauthusername
""".split()) | {""}

BASE = "conn c\n\tleft=192.0.2.1\n\tright=192.0.2.2\n\tauthby=secret\n"


def _all() -> list[tuple[str, str, K.KeyDef]]:
    out = [("setup", n, kd) for n, kd in K.SETUP_KEYS.items()]
    out += [("conn", n, kd) for n, kd in K.CONN_KEYS.items()]
    out += [("side", n, kd) for n, kd in K.SIDE_KEYS.items()]
    return out


def _canonical() -> list[tuple[str, str, K.KeyDef]]:
    return [(w, n, kd) for w, n, kd in _all() if not kd.alias]


def test_registry_is_libreswan_52s_keyword_set() -> None:
    assert set(K.SETUP_KEYS) == LIBRESWAN_52_SETUP | K.SETUP_ADDITIONS
    assert not K.SETUP_ADDITIONS & LIBRESWAN_52_SETUP
    assert set(K.CONN_KEYS) == LIBRESWAN_52_CONN
    assert set(K.SIDE_KEYS) == LIBRESWAN_52_SIDE


def test_every_keyword_is_proven_obsolete_or_refused() -> None:
    """The walk of issue 12: no keyword is parsed and ignored."""
    bad = []
    for where, name, kd in _all():
        if kd.alias:
            target = {"setup": K.SETUP_KEYS, "conn": K.CONN_KEYS, "side": K.SIDE_KEYS}[where]
            if kd.alias not in target or target[kd.alias].alias:
                bad.append((where, name, "alias of nothing"))
            continue
        if kd.support == "works" and not kd.test:
            bad.append((where, name, "works without a test"))
        elif kd.support == "partial" and not (kd.test and kd.ok):
            bad.append((where, name, "partial without values or test"))
        elif kd.support in ("obsolete", "refused") and not kd.note:
            bad.append((where, name, f"{kd.support} without a reason"))
        elif kd.support not in ("works", "partial", "obsolete", "refused"):
            bad.append((where, name, kd.support))
    assert bad == []


def _test_exists(test_id: str) -> bool:
    path, _, func = test_id.partition("::")
    f = ROOT / path
    return f.is_file() and re.search(rf"^(async )?def {re.escape(func)}\(", f.read_text(),
                                     re.MULTILINE) is not None


def test_every_named_test_exists() -> None:
    missing = sorted({kd.test for _w, _n, kd in _all() if kd.test and not _test_exists(kd.test)})
    assert missing == []


def _candidates(kd: K.KeyDef) -> list[str]:
    """Values to try against a partial key: its enum values, or the usual forms."""
    if kd.kind == "authby":
        return ["secret", "rsasig", "ecdsa", "null", "never"]
    if kd.values:
        return list(kd.values)
    if kd.kind == "bool":
        return ["yes", "no"]
    if kd.kind in ("int", "bignum"):
        return ["0", "1", "7"]
    if kd.kind == "time":
        return ["0", "30s"]
    return ["yes", "no", "somewhere", "/elsewhere", "192.0.2.254", "0s1234", "@x", "1",
            "sha2_256", "%dns"]


def _conn_text(name: str, where: str, value: str) -> str:
    key = "left" + name if where == "side" else name
    base = BASE.replace("\tauthby=secret\n", "") if name == "authby" else BASE
    # authby=never / leftauth=never only in a shunt conn (test_authby_never_only_in_a_shunt_conn)
    shunt = "\ttype=passthrough\n" if value == "never" and name in ("authby", "auth") else ""
    if name == "auth" and value == "null":  # NULL for one side: the other signs
        base, shunt = BASE.replace("\tauthby=secret\n", ""), "\trightauth=rsasig\n"
    return base + f"\t{key}={value}\n" + shunt


def _line(name: str) -> int:
    return 4 if name == "authby" else 5


def _parses(where: str, name: str, value: str) -> bool:
    """The value is valid syntax for the key (support aside)."""
    if where == "setup":
        return parse_config_text(f"config setup\n\t{name}={value}\n", "f",
                                 enforce_support=False).ok
    text = _conn_text(name, where, value)
    if name == "authby":
        text += "\tleftauth=secret\n\trightauth=secret\n"
    return "c" in parse_config_text(text, "f", enforce_support=False).conns


@pytest.mark.parametrize("where,name,kd",
                         [x for x in _canonical() if x[2].support == "partial"],
                         ids=lambda x: x if isinstance(x, str) else "")
def test_partial_keys_accept_their_values_and_refuse_others(where: str, name: str,
                                                            kd: K.KeyDef) -> None:
    """Each value that works loads; every other value refuses, naming KEY=VALUE."""
    key = ("left" + name) if where == "side" else name
    for value in kd.ok:
        if where == "setup":
            cfg = parse_config_text(f"config setup\n\t{name}={value}\n", "f")
            assert cfg.ok and not cfg.unsupported, (name, value, [str(d) for d in cfg.diagnostics])
        else:
            cfg = parse_config_text(_conn_text(name, where, value), "f")
            assert "c" in cfg.conns, (key, value, [str(d) for d in cfg.diagnostics])
    refused = [v for v in _candidates(kd) if K.unsupported_reason(kd, v) is not None
               and _parses(where, name, v)]
    assert refused, name
    for value in refused:
        if where == "setup":
            cfg = parse_config_text(f"config setup\n\t{name}={value}\n", "f")
            assert not cfg.ok
            assert str(cfg.file_errors[0]).startswith(
                f"f:2: {name}={value} is not supported by pypluto ("), str(cfg.file_errors[0])
        else:
            cfg = parse_config_text(_conn_text(name, where, value), "f")
            assert "c" not in cfg.conns
            d = cfg.failed["c"][0]
            assert d.unsupported and str(d).startswith(
                f"f:{_line(name)}: {key}={value} is not supported by pypluto ("), str(d)


@pytest.mark.parametrize("where,name,kd",
                         [x for x in _canonical() if x[2].support == "refused"],
                         ids=lambda x: x if isinstance(x, str) else "")
def test_refused_keys_refuse_the_conn_or_pluto(where: str, name: str, kd: K.KeyDef) -> None:
    value = next(v for v in _candidates(kd) if _parses(where, name, v))
    if where == "setup":
        cfg = parse_config_text(f"config setup\n\t{name}={value}\n", "f")
        assert not cfg.ok and cfg.file_errors[0].unsupported
        assert str(cfg.file_errors[0]) == f"f:2: {name} is not supported by pypluto ({kd.note})"
        return
    key = ("left" + name) if where == "side" else name
    cfg = parse_config_text(_conn_text(name, where, value), "f")
    assert "c" not in cfg.conns, key
    assert str(cfg.failed["c"][0]) == (f"f:5: {key} is not supported by pypluto ({kd.note}) "
                                       "(conn 'c' is not loaded)")


def test_refusal_makes_checkconfig_fail(tmp_path: pathlib.Path) -> None:
    f = tmp_path / "ipsec.conf"
    f.write_text(BASE + "\tmodecfgbanner=hello\nconn ok\n\tleft=192.0.2.1\n"
                 "\tright=192.0.2.3\n\tauthby=secret\n")
    err = io.StringIO()
    assert addconn_main(["--config", str(f), "--checkconfig"], out=io.StringIO(),
                        err=err) == 1
    assert f"{f}:5: modecfgbanner is not supported by pypluto" in err.getvalue()
    f.write_text(BASE)
    assert addconn_main(["--config", str(f), "--checkconfig"], out=io.StringIO(),
                        err=io.StringIO()) == 0


def test_whack_add_is_refused_too() -> None:
    """build_connection (the daemon's add path) refuses the same way."""
    from pypluto.config.parser import ConnError

    with pytest.raises(ConnError) as exc:
        build_connection("w", {"left": "192.0.2.1", "right": "192.0.2.2",
                               "authby": "secret", "compress": "yes"})
    assert exc.value.unsupported and exc.value.key == "compress"
    assert str(exc.value).startswith("compress=yes is not supported by pypluto (")
    # phase2=ah (issue 12) loads now
    conn = build_connection("w", {"left": "192.0.2.1", "right": "192.0.2.2",
                                  "authby": "secret", "phase2": "ah", "ah": "sha2_256"})
    assert conn.phase2 == "ah" and conn.ah and conn.ah[0].integ


@pytest.mark.parametrize("value", ["rsasig", "rsa", "ecdsa", "rsa-sha2", "rsa-sha2_256",
                                   "ecdsa-sha2_384", "eddsa", "secret,rsasig", "rsasig,ecdsa"])
def test_authby_with_signatures_loads(value: str) -> None:
    """issue 14: certificate authentication works (tests/ike/test_certs.py)."""
    cfg = parse_config_text(BASE.replace("authby=secret", f"authby={value}"), "f")
    assert "c" in cfg.conns, [str(d) for d in cfg.diagnostics]


def test_authby_never_only_in_a_shunt_conn() -> None:
    """authby=never: "negotiation is never to be attempted or accepted" (ipsec.conf(5)).
    A shunt conn is that, so it loads (Libreswan's own baseconfigs write it on their
    clear and block conns); a tunnel that never negotiates is refused, and never
    cannot be combined with another method."""
    cfg = parse_config_text(BASE.replace("authby=secret", "authby=never"), "f")
    assert "c" not in cfg.conns
    assert str(cfg.failed["c"][0]) == (
        "f:4: authby=never is not supported by pypluto with type=tunnel (a conn that is "
        "never negotiated is written type=passthrough, drop or reject) (conn 'c' is not loaded)")
    for typ in ("passthrough", "pass", "drop", "reject"):
        for key in ("authby", "leftauth", "rightauth"):
            text = BASE.replace("authby=secret", f"{key}=never\n\ttype={typ}")
            cfg = parse_config_text(text, "f")
            assert "c" in cfg.conns, [str(d) for d in cfg.diagnostics]
            assert cfg.conns["c"].type == ("passthrough" if typ == "pass" else typ)
    cfg = parse_config_text(BASE.replace("authby=secret", "type=transport\n\tleftauth=never"),
                            "f")
    assert "leftauth=never is not supported by pypluto with type=transport" in \
        str(cfg.failed["c"][0])
    cfg = parse_config_text(BASE.replace("authby=secret", "authby=never,secret\n\ttype=drop"),
                            "f")
    assert "c" not in cfg.conns
    assert "never cannot be combined" in str(cfg.failed["c"][0])


def test_authby_null_needs_id_null() -> None:
    """authby=null (RFC 7619) works with leftid/rightid %null or unset; others refused."""
    text = BASE.replace("authby=secret", "authby=null")
    cfg = parse_config_text(text, "f")
    assert "c" in cfg.conns, [str(d) for d in cfg.diagnostics]
    cfg = parse_config_text(text + "\tleftid=%null\n\trightid=@east\n", "f")
    assert "c" not in cfg.conns
    assert "rightid=@east is not supported by pypluto with authby=null" in str(cfg.failed["c"][0])


def test_default_authby_and_end_auth() -> None:
    no_authby = "conn c\n\tleft=192.0.2.1\n\tright=192.0.2.2\n"
    cfg = parse_config_text(no_authby, "f")
    assert "c" in cfg.conns  # Libreswan's default, rsasig,ecdsa: certificates (issue 14)
    cfg = parse_config_text(no_authby + "\tleftauth=secret\n\trightauth=secret\n", "f")
    assert "c" in cfg.conns
    assert "c" in parse_config_text(BASE + "\trightauth=rsasig\n", "f").conns
    cfg = parse_config_text(BASE + "\trightauth=eaponly\n", "f")
    assert str(cfg.failed["c"][0]).startswith(
        "f:5: rightauth=eaponly is not supported by pypluto (eaponly")
    # RFC 7619 NULL for one side: with a signing side it loads; PSK and NULL do not mix,
    # and the NULL side's ID is ID_NULL (as Libreswan's ikev2-asymmetric-01-parsing)
    sig_null = no_authby + "\tleftauth=rsasig\n\trightauth=null\n"
    assert "c" in parse_config_text(sig_null, "f").conns
    assert "c" in parse_config_text(sig_null + "\trightid=%null\n", "f").conns
    cfg = parse_config_text(sig_null + "\trightid=@road\n", "f")
    assert "rightid=@road is not supported by pypluto with rightauth=null" in \
        str(cfg.failed["c"][0])
    cfg = parse_config_text(BASE + "\trightauth=null\n", "f")
    assert str(cfg.failed["c"][0]) == (
        "f:1: leftauth=secret with rightauth=null is not supported by pypluto (PSK and "
        "NULL authentication do not mix, as in Libreswan's pluto) (conn 'c' is not loaded)")
    assert "c" in parse_config_text(BASE + "\tauthby=psk\n".replace("authby", "leftauth")
                                    .replace("psk", "secret"), "f").conns


@pytest.mark.parametrize("where,name,kd",
                         [x for x in _canonical() if x[2].support == "obsolete"],
                         ids=lambda x: x if isinstance(x, str) else "")
def test_obsolete_keys_warn_with_what_libreswan_does(where: str, name: str,
                                                     kd: K.KeyDef) -> None:
    text = f"config setup\n\t{name}=x\n" if where == "setup" else BASE + f"\t{name}=x\n"
    cfg = parse_config_text(text, "f")
    line = 2 if where == "setup" else 5
    assert f"f:{line}: warning: {name}=x: obsolete keyword ignored: {kd.note}" in \
        [str(d) for d in cfg.diagnostics]
    if where == "conn":
        assert "c" in cfg.conns


def test_libreswan_4_settings_keep_their_52_meaning() -> None:
    """dpdaction=restart / keyingtries=%forever: Libreswan 5.2 ignores both with a
    warning (an up conn is retried until it is taken down; a dead peer restarts an
    auto=start conn only); pypluto does exactly that, and says so."""
    cfg = parse_config_text(BASE + "\tdpdaction=restart\n\tkeyingtries=%forever\n"
                            "\tdpddelay=10\n\tauto=start\n", "f")
    c = cfg.conns["c"]
    assert c.dpdaction == "hold" and c.keyingtries == 0 and c.auto == "start"
    msgs = [str(d) for d in cfg.diagnostics]
    assert any(m.startswith("f:5: warning: dpdaction=restart: obsolete keyword ignored: "
                            "Libreswan 5.2 ignores dpdaction=") for m in msgs)
    assert any(m.startswith("f:6: warning: keyingtries=%forever: obsolete keyword ignored")
               for m in msgs)
    # 4.x aliases that 5.2 still maps keep their meaning
    cfg = parse_config_text("config setup\n\tplutostderrlog=/tmp/p.log\n"
                            "\tvirtual_private=%v4:10.0.0.0/8\n", "f")
    assert cfg.setup.logfile == "/tmp/p.log"
    assert cfg.setup.virtual_private == "%v4:10.0.0.0/8"


@pytest.mark.parametrize("key", ["leftfirewall", "rightfirewall", "lefteddsakey",
                                 "leftrsasigkey2", "forceencaps", "nat_traversal",
                                 "pfsgroup", "cisco-split", "labeled-ipsec"])
def test_keys_libreswan_52_does_not_know_are_syntax_errors(key: str) -> None:
    cfg = parse_config_text(BASE + f"\t{key}=yes\n", "f")
    assert not cfg.ok
    assert str(cfg.file_errors[0]) == f"f:5: unrecognized keyword '{key}'"


def test_setup_keys_libreswan_52_does_not_know_are_syntax_errors() -> None:
    for key in ("force-busy", "rundir", "nat_traversal", "plutofork"):
        cfg = parse_config_text(f"config setup\n\t{key}=yes\n", "f")
        assert str(cfg.file_errors[0]) == f"f:2: unrecognized keyword '{key}'"


def test_subnets_expand_into_one_conn_per_pair() -> None:
    """leftsubnets= x rightsubnets=: Libreswan's NAME/LxR conns, left-major, numbered
    from 1 (a subnet= of the same end is number 0); each is a normal conn."""
    cfg = parse_config_text(BASE + "\tleftsubnets=10.1.0.0/16,10.2.0.0/16\n"
                            "\trightsubnets={10.3.0.0/16 10.4.0.0/16}\n\tauto=add\n", "f")
    assert cfg.conn_names == ["c"]
    assert list(cfg.conns) == ["c/1x1", "c/1x2", "c/2x1", "c/2x2"]
    pairs = [(str(c.left.subnets[0]), str(c.right.subnets[0])) for c in cfg.conns.values()]
    assert pairs == [("10.1.0.0/16", "10.3.0.0/16"), ("10.1.0.0/16", "10.4.0.0/16"),
                     ("10.2.0.0/16", "10.3.0.0/16"), ("10.2.0.0/16", "10.4.0.0/16")]
    assert all(c.connalias == "c" and c.auto == "add" and len(c.left.subnets) == 1
               for c in cfg.conns.values())
    assert [c.name for c in cfg.conns_for("c")] == ["c/1x1", "c/1x2", "c/2x1", "c/2x2"]
    assert [c.name for c in cfg.conns_for("c/1x2")] == ["c/1x2"] and cfg.conns_for("x") == []
    # one end only; the other end is its host (number 0)
    cfg = parse_config_text(BASE + "\trightsubnets=10.3.0.0/16,10.4.0.0/16\n", "f")
    assert list(cfg.conns) == ["c/0x1", "c/0x2"]
    assert cfg.conns["c/0x1"].left.subnets == []
    # subnet= is pair number 0 of its end
    cfg = parse_config_text(BASE + "\tleftsubnet=10.9.0.0/16\n"
                            "\tleftsubnets=10.1.0.0/16\n\trightsubnet=10.3.0.0/16\n", "f")
    assert list(cfg.conns) == ["c/0x0", "c/1x0"]
    assert cfg.conns["c/1x0"].left.subnets == [ipaddress.ip_network("10.1.0.0/16")]
    # mixed families: that pair is skipped with a warning
    cfg = parse_config_text(BASE + "\tleftsubnets=10.1.0.0/16,2001:db8::/64\n"
                            "\trightsubnets=10.3.0.0/16\n", "f")
    assert list(cfg.conns) == ["c/1x1"]
    assert any("skipping mismatched leftsubnets=2001:db8::/64" in str(d)
               for d in cfg.diagnostics)


def test_docs_table_is_generated_from_the_registry() -> None:
    """docs/config.md carries ``python -m pypluto.config.keywords --markdown``."""
    doc = (ROOT / "docs" / "config.md").read_text()
    table = K.markdown_table()
    start = doc.index("<!-- generated by: python -m pypluto.config.keywords --markdown -->")
    end = doc.index("<!-- end of generated table -->") + len("<!-- end of generated table -->\n")
    assert doc[start:end] == table


@pytest.mark.parametrize("key,value", [("ike", "aes128-sha2-dh31;addke1=ml_kem_768"),
                                       ("ike", "aes_gcm256-sha2_384-x25519-ke1_mlkem768"),
                                       ("ike", "aes_gcm256-sha2_384-dh20;addke1=mlkem1024"),
                                       ("esp", "aes_gcm128-none-dh19;addke2=mlkem768")])
def test_additional_key_exchanges_are_accepted(key: str, value: str) -> None:
    """ike=/esp=...;addkeN= (and strongSwan's keN_ spelling) work: IKE_INTERMEDIATE and
    IKE_FOLLOWUP_KE (tests/ike/test_intermediate.py, tests/interop/test_pq.py)."""
    cfg = parse_config_text(BASE + f"\t{key}={value}\n", "f")
    assert "c" in cfg.conns, [str(d) for d in cfg.diagnostics]
    specs = getattr(cfg.conns["c"], key)
    assert specs and specs[0].addke




def test_address_family_keys() -> None:
    """hostaddrfamily= / clientaddrfamily= (ipv4, ipv6 and their aliases): the family of
    the hosts, of the subnets; an address written in the other family refuses the conn
    (what the hint does for host names and %defaultroute: tests/daemon/test_resolver.py)."""
    for value, fam in (("ipv4", 4), ("inet", 4), ("v4", 4), ("ipv6", 6), ("inet6", 6)):
        cfg = parse_config_text(
            "conn c\n\tleft=%defaultroute\n\tright=vpn.example.org\n\tauthby=secret\n"
            f"\thostaddrfamily={value}\n", "f")
        assert cfg.conns["c"].hostaddrfamily == fam, [str(d) for d in cfg.diagnostics]
    cfg = parse_config_text(BASE + "\thostaddrfamily=ipv6\n", "f")
    assert str(cfg.failed["c"][0]) == \
        "f:5: while loading 'c': hostaddrfamily=ipv6 but left=192.0.2.1 is IPv4"
    ok = BASE + "\tleftsubnet=198.51.100.0/24\n\trightsubnet=203.0.113.0/24\n"
    assert "c" in parse_config_text(ok + "\tclientaddrfamily=ipv4\n", "f").conns
    cfg = parse_config_text(ok + "\tclientaddrfamily=ipv6\n", "f")
    assert "clientaddrfamily=ipv6 but leftsubnet=198.51.100.0/24 is IPv4" in \
        str(cfg.failed["c"][0])
    assert parse_config_text(BASE, "f").conns["c"].hostaddrfamily is None
