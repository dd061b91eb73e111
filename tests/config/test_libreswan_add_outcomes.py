"""``ipsec add`` outcomes checked against Libreswan 5.2's own test suite (testing/pluto).

Every row names the Libreswan test directory whose expected console output is the
source of the fact (a conn that Libreswan's pluto refuses to add, loads with a
warning, or loads).  The conn texts are minimal ones written here, on documentation
addresses; only the short refusal reasons are Libreswan's words.

Two stages, as in Libreswan: the file is read (``ipsec addconn --checkconfig``:
``parse_config_text``) and the conn is then added to the daemon (pluto: ``Registry.add``,
which answers whack with ``"c": FILE:LINE: reason``).  Libreswan refuses a conn at
either stage; so do we, with the same reason where it is the same check.

Found by this sweep (each row failed before its fix): selectors of different address
families (subnets, else pool, else host) were added and could never make a traffic
selector pair; ``narrowing=no`` with a pool, ``leftsubnet=`` written empty, ``leftauth=``
without ``rightauth=`` and a conn without ``right=`` were added (the last kept unoriented
for ever); ``leftsubnet=a,b`` with ``rightsubnets=`` was refused with a misleading
reason; ``X-``/``x_`` comment keys made the file fail; ``leftid=@[name]`` was sent as
ID_FQDN instead of ID_KEY_ID.  The other rows pin outcomes that already agreed.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from test_cfg_keyword_audit import _Driver  # tests/config is on sys.path
from testsupport import RecordingLog

from pypluto.config.ids import ID_FQDN, ID_IPV4_ADDR, ID_KEY_ID, parse_id
from pypluto.config.parser import parse_config_text
from pypluto.control.protocol import RC_FATAL, RC_SUCCESS
from pypluto.daemon.registry import Registry

V4 = "conn c\n\tleft=192.0.2.1\n\tright=192.0.2.2\n\tauthby=secret\n"
V6 = "conn c\n\tleft=2001:db8::1\n\tright=2001:db8::2\n\tauthby=secret\n"
# the body's first line is line 5 of the file "f"


def _ids(rows: list[tuple[Any, ...]]) -> list[str]:
    return [f"{row[0]}-{i}" for i, row in enumerate(rows)]


def _add(text: str) -> tuple[int, list[str], list[str]]:
    """(whack rc, what whack was told, what reached the engine) for ``ipsec add c``; the
    file itself must load (Libreswan's addconn --checkconfig accepts these files)."""
    cfg = parse_config_text(text, "f")
    assert "c" in cfg.conns, [str(d) for d in cfg.diagnostics]
    drv = _Driver()
    reg = Registry(RecordingLog(), drv, True, lambda name: 0)  # type: ignore[arg-type]
    reg.local_addrs = {ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("2001:db8::1")}
    out: list[str] = []
    rc = reg.add(cfg.conns["c"], out.append)
    return rc, out, drv.added


# (Libreswan test dir, conn text, line of the reported key, Libreswan's reason)
REFUSED_AT_ADD = [
    # selectors: each end's subnets, else its pool, else its host; families must match
    ("addconn-12-family", V4 + "\tleftsubnet=198.51.100.0/24\n\trightsubnet=::/0\n", 5,
     "address family of leftsubnet=198.51.100.0/24 conflicts with rightsubnet=::/0"),
    ("addconn-12-family", V6 + "\tleftsubnet=2001:db8:1::/64\n\trightsubnet=0.0.0.0/0\n", 5,
     "address family of leftsubnet=2001:db8:1::/64 conflicts with rightsubnet=0.0.0.0/0"),
    ("addconn-12-family", V6 + "\tleftsubnet=198.51.100.0/24\n", 5,
     "address family of leftsubnet=198.51.100.0/24 conflicts with right=2001:db8::2"),
    ("addconn-12-family", V6 + "\tleftsubnet=198.51.100.0/24\n\tleftprotoport=tcp/22\n", 5,
     "address family of leftsubnet=198.51.100.0/24 conflicts with right=2001:db8::2"),
    ("addconn-12-family", V4 + "\tleftsubnet=2001:db8:1::/64\n", 5,
     "address family of leftsubnet=2001:db8:1::/64 conflicts with right=192.0.2.2"),
    ("addconn-14-addresspool", V6 + "\tleftaddresspool=198.51.100.0/24\n", 5,
     "address family of leftaddresspool=198.51.100.0/24 conflicts with right=2001:db8::2"),
    ("addconn-14-addresspool", V4 + "\tleftaddresspool=2001:db8:3::/97\n", 5,
     "address family of leftaddresspool=2001:db8:3::/97 conflicts with right=192.0.2.2"),
    ("addconn-14-addresspool", V4 + "\tleftaddresspool=198.51.100.0/24\n"
     "\trightsubnet=2001:db8:2::/64\n", 5,
     "address family of leftaddresspool=198.51.100.0/24 conflicts with "
     "rightsubnet=2001:db8:2::/64"),
    ("addconn-14-addresspool", V4 + "\tleftaddresspool=198.51.100.0/24,2001:db8:1::/64\n"
     "\trightsubnet=203.0.113.0/24\n", 5,
     "address family of leftaddresspool=198.51.100.0/24,2001:db8:1::/64 conflicts with "
     "rightsubnet=203.0.113.0/24"),
    ("addconn-15-sourceip", V4 + "\tleftsubnet=2001:db8:2::/64,198.51.100.0/24\n", 5,
     "address family of leftsubnet=2001:db8:2::/64,198.51.100.0/24 conflicts with "
     "right=192.0.2.2"),
    # narrowing=no: the pool's lease is the selector, so it has to narrow
    ("addconn-14-addresspool", V4 + "\tnarrowing=no\n\tleftaddresspool=198.51.100.0/24\n", 5,
     "narrowing=no conflicts with leftaddresspool=198.51.100.0/24"),
    # subnet= written empty is not "unset"
    ("addconn-13-subnets", V4 + "\tleftsubnet=\n\trightsubnet=203.0.113.1/32\n", 5,
     "leftsubnet= invalid, empty field"),
    ("addconn-16-empty-config-option", V4 + "\tesp=aes-sha2\n\trightsubnet=\n", 6,
     "rightsubnet= invalid, empty field"),
    # one end's auth= without the other's (the source of this fact is Libreswan 5.2's
    # connections.c; the test dir that shows it is marked wip)
    ("ikev2-asymmetric-01-parsing", V4 + "\tleftauth=rsasig\n", 5,
     "leftauth= and rightauth= must both be set or both be unset"),
    ("ikev2-asymmetric-01-parsing", V4 + "\trightauth=secret\n", 5,
     "leftauth= and rightauth= must both be set or both be unset"),
    # authby=secret|null allows no signature end (5.2's connections.c keeps of authby=
    # only an end's kind; ikev2-asymmetric-01-parsing's failtest5); it had loaded with
    # leftauth= deciding and authby= ignored.  The file stage loads it, as 4.10's
    # readwriteconf does (tests/config/test_cfg_agreement.py)
    ("addconn-20-conn-default", V4 + "\tleftauth=secret\n\trightauth=rsasig\n", 6,
     "rightauth=rsasig expects authby=rsasig"),
    ("ikev2-asymmetric-01-parsing", V4.replace("secret", "null") + "\tleftauth=ecdsa\n"
     "\trightauth=null\n", 5, "leftauth=ecdsa expects authby=ecdsa"),
    # an end without a host is never oriented nor negotiated (Libreswan's addconn says
    # "Failed to load connection left= is not set"; before: kept unoriented for ever)
    ("addconn-43-x-comment", "conn c\n\tleft=192.0.2.1\n\tauthby=secret\n", 1,
     "right= is not set"),
    ("addconn-43-x-comment", "conn c\n\tright=192.0.2.1\n\tauthby=secret\n", 1,
     "left= is not set"),
    # refused before this sweep (regression rows)
    ("addconn-20-conn-default", V4 + "\tleftid=%fromcert\n", 5,
     "ID cannot be specified as %fromcert if PSK or AUTH-NULL is used"),
    ("addconn-14-addresspool", V4 + "\tleftmodecfgserver=yes\n"
     "\tleftaddresspool=198.51.100.0/24\n", 6,
     "leftmodecfgserver=yes does not expect leftaddresspool="),
    ("addconn-14-addresspool", V4 + "\trightmodecfgclient=yes\n"
     "\tleftaddresspool=198.51.100.0/24\n", 6,
     "rightmodecfgclient=yes does not expect leftaddresspool="),
    ("addconn-15-sourceip", V4 + "\tleftsourceip=192.0.2.9\n", 5,
     "leftsourceip=192.0.2.9 invalid, address 192.0.2.9 does not match left=192.0.2.1 and "
     "leftsubnet= was not specified"),
    ("addconn-15-sourceip", V4 + "\tleftsourceip=198.51.100.1\n\tleftsubnet=203.0.113.0/24\n",
     5, "leftsourceip=198.51.100.1 invalid, address 198.51.100.1 is not within "
     "leftsubnet=203.0.113.0/24"),
    ("addconn-15-sourceip", V4 + "\tleftsubnet=198.51.100.0/24,2001:db8:1::/64\n"
     "\trightsubnet=203.0.113.0/24,2001:db8:2::/64\n"
     "\tleftsourceip=198.51.100.1,2001:db8:1::1,198.51.100.2\n", 7,
     "leftsourceip=198.51.100.1,2001:db8:1::1,198.51.100.2 invalid, multiple IPv4 addresses "
     "(198.51.100.1 and 198.51.100.2) specified"),
]


@pytest.mark.parametrize(("source", "text", "line", "why"), REFUSED_AT_ADD,
                         ids=_ids(REFUSED_AT_ADD))
def test_libreswan_refuses_to_add_and_so_do_we(source: str, text: str, line: int,
                                                why: str) -> None:
    rc, out, added = _add(text)
    assert (rc, out, added) == (RC_FATAL, [f'"c": f:{line}: {why}'], []), source


# (Libreswan test dir, conn text): Libreswan adds these; the counterparts of the above
LOADS = [
    ("addconn-12-family", V4 + "\tleftsubnet=198.51.100.0/24\n\trightsubnet=0.0.0.0/0\n"),
    ("addconn-12-family", V4 + "\tleftsubnet=198.51.100.0/24\n\tleftprotoport=tcp/22\n"),
    ("addconn-12-family", V6 + "\tleftsubnet=198.51.100.0/24\n\trightsubnet=0.0.0.0/0\n"),
    ("addconn-12-family", V4 + "\tleftsubnet=2001:db8:1::/64\n\trightsubnet=::/0\n"),
    ("addconn-14-addresspool", V6 + "\tleftaddresspool=2001:db8:3::/97\n"),
    ("addconn-14-addresspool", V4 + "\tleftaddresspool=198.51.100.0/24,2001:db8:1::/64\n"
     "\trightsubnet=2001:db8:2::/64,203.0.113.0/24\n"),
    ("addconn-14-addresspool", V4 + "\tnarrowing=yes\n\tleftaddresspool=198.51.100.0/24\n"),
    ("addconn-15-sourceip", V4 + "\tleftsubnet=2001:db8:1::/64,198.51.100.0/24\n"
     "\trightsubnet=2001:db8:2::/64,203.0.113.0/24\n"
     "\tleftsourceip=198.51.100.1,2001:db8:1::1\n"),
    # cert-allow has no authby= (with authby=secret 5.2 refuses it: REFUSED_AT_ADD)
    ("addconn-20-conn-default", V4.replace("\tauthby=secret\n", "") + "\tleftauth=secret\n"
     "\trightauth=rsasig\n\trightid=%fromcert\n"),
    ("ikev2-asymmetric-01-parsing", V4 + "\tleftauth=secret\n\trightauth=secret\n"),
]


@pytest.mark.parametrize(("source", "text"), LOADS, ids=_ids(LOADS))
def test_libreswan_adds_and_so_do_we(source: str, text: str) -> None:
    rc, out, added = _add(text)
    assert (rc, added) == (RC_SUCCESS, ["c"]), (source, out)


# (Libreswan test dir, conn text, line, our refusal): the file stage refuses these
REFUSED_IN_FILE = [
    # subnets= pairs cannot be made from a subnet= list (before: "... does not appear to
    # be an IPv4 or IPv6 network", which hid the reason)
    ("addconn-13-subnets", V4 + "\tleftsubnet=198.51.100.1/32,198.51.100.2/32\n"
     "\trightsubnets=203.0.113.1/32\n", 5,
     'multi-selector leftsubnet="198.51.100.1/32,198.51.100.2/32" combined with '
     'rightsubnets="203.0.113.1/32"'),
    ("addconn-13-subnets", V4 + "\tleftsubnet=198.51.100.1/32,198.51.100.2/32\n"
     "\tleftsubnets=198.51.100.3/32\n\trightsubnet=203.0.113.1/32\n", 5,
     'multi-selector leftsubnet="198.51.100.1/32,198.51.100.2/32" combined with '
     'leftsubnets="198.51.100.3/32"'),
    # regression rows
    ("addconn-12-family", V4 + "\tleftsubnet=0.0.0.0/0\n\trightsubnet=0.0.0.0/0\n"
     "\tclientaddrfamily=ipv6\n", 7, "clientaddrfamily=ipv6 but leftsubnet=0.0.0.0/0 is IPv4"),
    ("addconn-14-addresspool", V4 + "\tleftaddresspool=,198.51.100.0/24\n", 5,
     "leftaddresspool=,198.51.100.0/24: empty field"),
    ("addconn-14-addresspool", V4 + "\tleftaddresspool=0.0.0.0/24\n", 5,
     "address pool 0.0.0.0/24 starts at address zero"),
    ("addconn-14-addresspool", V4 + "\tleftaddresspool=198.51.100.0/24\n"
     "\tleftsubnet=198.51.100.0/24\n", 5,
     "cannot specify both leftaddresspool= and leftsubnet="),
    ("addconn-22-authby-hash-algo", V4.replace("secret", "ecdsa-sha1"), 4,
     "authby=ecdsa cannot use sha1, only sha2"),
    ("ikev2-algo-03-aes-ccm", V4 + "\tesp=aes_ccm_a-152-null\n", 5,
     "wrong encryption key length 152"),
    ("ikev2-algo-15-esp-null-none", V4 + "\tesp=null-none\n", 5,
     "non-AEAD encryption requires an integrity algorithm other than 'none'"),
    ("ah-pluto-09", V4 + "\tphase2=ah\n\tah=des\n", 6,
     "AH integrity algorithm 'des' is not recognized"),
    ("algo-pluto-07", V4 + "\tesp=aes256-sha2_256-4096\n", 5, "esp=aes256-sha2_256-4096"),
]


@pytest.mark.parametrize(("source", "text", "line", "why"), REFUSED_IN_FILE,
                         ids=_ids(REFUSED_IN_FILE))
def test_libreswan_refuses_and_so_does_our_file_stage(source: str, text: str, line: int,
                                                       why: str) -> None:
    cfg = parse_config_text(text, "f")
    assert "c" not in cfg.conns, source
    errors = [str(d) for d in cfg.diagnostics if d.severity == "error"]
    assert [e for e in errors if e.startswith(f"f:{line}: ") and why in e], (source, errors)


# (Libreswan test dir, conn text, our refusal): Libreswan loads or refuses these for
# IKEv1 or kernel reasons; pypluto refuses them as not supported (never ignored)
UNSUPPORTED = [
    ("ikev2-asymmetric-01-parsing", V4 + "\tleftauth=secret\n\trightauth=null\n",
     "leftauth=secret with rightauth=null is not supported by pypluto"),
    ("addconn-46-iptfs", V4 + "\tiptfs=yes\n", "iptfs=yes is not supported by pypluto"),
    ("addconn-37-nic-offload", V4 + "\tnic-offload=packet\n\tencapsulation=yes\n",
     "nic-offload=packet is not supported by pypluto"),
    ("addconn-30-ikev1-labeled-ipsec", V4 + "\tkeyexchange=ikev1\n",
     "keyexchange=ikev1 is not supported by pypluto"),
    ("addconn-14-addresspool", V4 + "\trightcat=yes\n\tleftaddresspool=198.51.100.0/24\n",
     "rightcat=yes is not supported by pypluto"),
]


@pytest.mark.parametrize(("source", "text", "why"), UNSUPPORTED, ids=_ids(UNSUPPORTED))
def test_refused_as_not_supported(source: str, text: str, why: str) -> None:
    cfg = parse_config_text(text, "f")
    assert "c" not in cfg.conns, source
    assert [d for d in cfg.unsupported if why in str(d) and str(d).startswith("f:")], \
        (source, [str(d) for d in cfg.diagnostics])


# (Libreswan test dir, conn text, our warning): Libreswan loads with a warning
WARNS = [
    ("addconn-09-dpd-vs-liveness", V4 + "\tdpdtimeout=10s\n", "IKEv2 ignores dpdtimeout="),
    ("addconn-26-keyingtries", V4 + "\tauto=start\n\tkeyingtries=1\n", "keyingtries=1"),
    ("addconn-28-fragmentation", V4 + "\tfragmentation=force\n",
     "IKEv1 only fragmentation=force ignored; using fragmentation=yes"),
    ("addconn-47-ikepad", V4 + "\tikepad=no\n", "IKEv2 connection ignores ikepad=no"),
    # keys starting X- or x_ are comments (before: "unrecognized keyword", a file error)
    ("addconn-43-x-comment", V4 + "\tX-vendor-note=kept for the tooling\n",
     "f:5: warning: X- style comment ignored: X-vendor-note=kept for the tooling"),
    ("addconn-43-x-comment", V4 + "\tx_flag\n", "f:5: warning: X- style comment ignored: x_flag"),
    ("addconn-43-x-comment", "config setup\n\tx-owner = ops\n" + V4,
     "f:2: warning: X- style comment ignored: x-owner = ops"),
    ("addconn-15-sourceip", V4 + "\tleftsubnets=198.51.100.0/24,2001:db8:1::/64\n"
     "\trightsubnets=2001:db8:2::/64\n",
     "skipping mismatched leftsubnets=198.51.100.0/24 rightsubnets=2001:db8:2::/64"),
]


@pytest.mark.parametrize(("source", "text", "why"), WARNS, ids=_ids(WARNS))
def test_libreswan_warns_and_we_load_with_a_warning(source: str, text: str, why: str) -> None:
    cfg = parse_config_text(text, "f")
    assert cfg.conns, (source, [str(d) for d in cfg.diagnostics])
    assert not cfg.errors, (source, [str(d) for d in cfg.errors])
    assert [d for d in cfg.diagnostics if d.severity == "warning" and why in str(d)], \
        (source, [str(d) for d in cfg.diagnostics])


def test_bracketed_id_is_an_opaque_key_id() -> None:
    """addconn-40-id: Libreswan 5.2 adds ``leftid=@[foo]`` as ID_KEY_ID "foo" (the group
    name of ipsec.conf(5)'s ``rightid=@[GroupName]``).  Before: pypluto sent an ID_FQDN,
    which a peer that expects the group's KEY_ID does not match."""
    ident = parse_id("@[GroupName]")
    assert (ident.id_type, ident.data) == (ID_KEY_ID, b"GroupName")
    conn = parse_config_text(V4 + "\tleftid=@[foo]\n", "f").conns["c"]
    assert conn.left.id is not None and conn.left.id.id_type == ID_KEY_ID
    assert conn.left.id.data == b"foo"
    assert parse_id("@foo").id_type == ID_FQDN  # a plain @name stays an FQDN


@pytest.mark.parametrize(("first", "second", "why"), [
    ("198.51.100.0/28", "198.51.100.0/24",
     "rightaddresspool=198.51.100.0/24 invalid, range inexactly overlaps existing address "
     "pool 198.51.100.0/28"),
    ("2001:db8:3::/120", "2001:db8:3::/124",
     "rightaddresspool=2001:db8:3::/124 invalid, range inexactly overlaps existing address "
     "pool 2001:db8:3::/120"),
    ("198.51.100.10-198.51.100.20", "198.51.100.15-198.51.100.30",
     "rightaddresspool=198.51.100.15-198.51.100.30 invalid, range inexactly overlaps "
     "existing address pool 198.51.100.10-198.51.100.20"),
    ("198.51.100.0/28", "198.51.100.0/28", None),  # the same range: one pool, shared
    ("198.51.100.0-198.51.100.15", "198.51.100.0/28", None),  # same range, written apart
    ("198.51.100.0/28", "198.51.100.16/28", None),  # apart
])
def test_a_pool_that_inexactly_overlaps_a_loaded_one_is_refused(first: str, second: str,
                                                                why: str | None) -> None:
    """addconn-14-addresspool (addresspool.c): one pool per range; a range that overlaps
    a loaded conn's without being equal is refused when the conn is added.  Before,
    both loaded and the lease table gave the second no address while the first had
    leases."""
    me = "2001:db8::1" if ":" in first else "192.0.2.1"
    text = (f"conn a\n\tleft={me}\n\tright=%any\n\tauthby=secret\n"
            f"\trightaddresspool={first}\n"
            f"conn c\n\tleft={me}\n\tright=%any\n\tauthby=secret\n"
            f"\trightaddresspool={second}\n")
    cfg = parse_config_text(text, "f")
    drv = _Driver()
    reg = Registry(RecordingLog(), drv, True, lambda name: 0)  # type: ignore[arg-type]
    reg.local_addrs = {ipaddress.ip_address(me)}
    assert reg.add(cfg.conns["a"]) == RC_SUCCESS
    out: list[str] = []
    rc = reg.add(cfg.conns["c"], out.append)
    if why is None:
        assert rc == RC_SUCCESS and drv.added == ["a", "c"], out
    else:
        assert (rc, out, drv.added) == (RC_FATAL, [f'"c": f:10: {why}'], ["a"])


@pytest.mark.parametrize(("key", "value", "want"), [
    ("leftid", "west-gw.example", ("192.0.2.1", ID_IPV4_ADDR)),
    ("rightid", "east-gw.example", ("192.0.2.2", ID_IPV4_ADDR)),
    ("rightid", "dual.example", ("192.0.2.9", ID_IPV4_ADDR)),  # the end's family first
    ("leftid", "foo", "leftid=foo invalid: not a numeric IPv4 address and name lookup "
     "failed (no validation performed)"),
    ("leftid", "@foo", ("@foo", ID_FQDN)),  # @name is an FQDN as written, never resolved
])
def test_a_bare_name_as_id_is_resolved_when_the_conn_is_added(key: str, value: str,
                                                               want: object) -> None:
    """addconn-40-id: Libreswan 5.2 resolves ``leftid=name`` (no ``@``) to an IP address
    ID when the conn is added, and refuses the conn when the name does not resolve.
    Before: pypluto sent ID_FQDN "name", which a Libreswan peer expecting the address
    does not match."""
    table = {"west-gw.example": ["192.0.2.1"], "east-gw.example": ["192.0.2.2"],
             "dual.example": ["2001:db8::9", "192.0.2.9"]}

    def resolver(name: str) -> list[Any]:
        if name not in table:
            raise OSError(f"{name}: no such name")
        return [ipaddress.ip_address(a) for a in table[name]]

    cfg = parse_config_text(V4 + f"\t{key}={value}\n", "f")
    drv = _Driver()
    reg = Registry(RecordingLog(), drv, True, lambda name: 0)  # type: ignore[arg-type]
    reg.local_addrs = {ipaddress.ip_address("192.0.2.1")}
    reg.resolver = resolver
    out: list[str] = []
    conn = cfg.conns["c"]
    rc = reg.add(conn, out.append)
    if isinstance(want, str):
        assert (rc, out, drv.added) == (RC_FATAL, [f'"c": {want}'], [])
        return
    assert (rc, drv.added) == (RC_SUCCESS, ["c"]), out
    end = conn.left if key == "leftid" else conn.right
    text, id_type = want  # type: ignore[misc]
    assert end.id is not None and (end.id.text, end.id.id_type) == (text, id_type)
