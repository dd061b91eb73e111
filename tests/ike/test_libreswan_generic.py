"""Libreswan 5.2's generic IKEv2 tests (``ikev2-NN-*``, ``ikev2-algo-*``) run through ours.

Each row names a ``testing/pluto/<dir>`` of Libreswan v5.2 (marked ``good`` in its
TESTLIST) and restates that test's west/east configuration in our own short form as
ipsec.conf keys; the expected outcome (which SAs come up, the negotiated algorithms,
which notify refuses what) is the one that test's ``*.console.txt`` shows.  The
helpers (``conn``/``make_net``/``Want``/``check``) are those of
test_libreswan_outcomes.py; addresses are the harness's: west 192.0.2.1 /
198.51.100.0/24, east 192.0.2.2 / 203.0.113.0/24.

Where a Libreswan test authenticates with raw RSA keys or certificates only to get
an IKE SA up (the point of the test is elsewhere) the row uses a PSK.

Found by this sweep (each row failed before its fix):
- ikev2-04-basic-x509-no-ca(-02): with no CA to validate it, the peer's certificate
  was refused even though it is the very one ``rightcert=`` preloads; it is now
  trusted as pinned (within its validity; the ID and signature checks stay)
  (ike/auth_sig.py ``_verify``).
- ikev2-16-alias-whack-*: starting a second conn of the same hosts and IDs while the
  first one's IKE SA was still negotiating opened a second IKE SA; its Child SA now
  waits for that IKE SA and comes up on it (ike/engine.py ``Engine.initiate``).
Kept, and said so in the row: compress=yes, leftcat=yes and pam-authorize=yes are not
loaded (documented as not implemented), where Libreswan brings those conns up.
"""

from __future__ import annotations

import ipaddress
import random
from pathlib import Path

import pytest

from pypluto.config.model import bump_generation
from pypluto.config.parser import parse_config_text
from pypluto.config.secrets import parse_secrets_text
from pypluto.ike.actions import AddPolicy
from pypluto.ike.engine import Engine
from pypluto.ike.settings import EngineSettings
from pypluto.params import SAAcquire, TrafficSelector

from .harness import PSK, WEST, Net, Store
from .test_libreswan_lifecycle import asym_net, nss  # noqa: F401 (a fixture)
from .test_libreswan_outcomes import (
    BASE,
    ENET,
    HOST,
    WNET,
    Want,
    _children,
    _ike,
    _rows,
    check,
    conn,
    make_net,
)
from .test_libreswan_x509 import Ends, pki, x509_net
from .test_libreswan_x509 import up as x509_up

# our names for Libreswan's console names
GCM256 = ("AES_GCM_16_256", "", "PRF_HMAC_SHA2_512", "ECP_256")  # the default IKE SA
SHA1_96, SHA2_256 = "AUTH_HMAC_SHA1_96", "AUTH_HMAC_SHA2_256_128"


def _sha1_ike(encr: str) -> tuple[str, str, str, str]:
    return (encr, SHA1_96, "PRF_HMAC_SHA1", "ECP_256")


def _sha2_ike(encr: str, ke: str) -> tuple[str, str, str, str]:
    return (encr, SHA2_256, "PRF_HMAC_SHA2_256", ke)


def _same(keys: dict) -> tuple[dict, dict]:
    return keys, keys


# (Libreswan test dir, west keys, east keys, expected outcome)
ALGO: list = [
    ("ikev2-algo-04-aes-gcm256", *_same({"esp": "aes_gcm256-null"}),
     Want(ike_algs=GCM256, esp=("AES_GCM_16_256", ""))),
    ("ikev2-algo-10-aes-gcm128", *_same({"esp": "aes_gcm128-null"}),
     Want(ike_algs=GCM256, esp=("AES_GCM_16_128", ""))),
    # "aes" with no key length: 256 first for IKE, 128 first for ESP; east's conn is
    # ike=aes-sha1 esp=aes-sha1 for every west conn (west's naming a key length)
    ("ikev2-algo-05-aes-default:default", *_same({"ike": "aes-sha1", "esp": "aes-sha1"}),
     Want(ike_algs=_sha1_ike("AES_CBC_256"), esp=("AES_CBC_128", SHA1_96))),
    ("ikev2-algo-05-aes-default:128", {"ike": "aes128-sha1", "esp": "aes128-sha1"},
     {"ike": "aes-sha1", "esp": "aes-sha1"},
     Want(ike_algs=_sha1_ike("AES_CBC_128"), esp=("AES_CBC_128", SHA1_96))),
    ("ikev2-algo-05-aes-default:256", {"ike": "aes256-sha1", "esp": "aes256-sha1"},
     {"ike": "aes-sha1", "esp": "aes-sha1"},
     Want(ike_algs=_sha1_ike("AES_CBC_256"), esp=("AES_CBC_256", SHA1_96))),
    ("ikev2-algo-05-aes-default:mix-1", {"ike": "aes128-sha1", "esp": "aes256-sha1"},
     {"ike": "aes-sha1", "esp": "aes-sha1"},
     Want(ike_algs=_sha1_ike("AES_CBC_128"), esp=("AES_CBC_256", SHA1_96))),
    ("ikev2-algo-05-aes-default:mix-2", {"ike": "aes256-sha1", "esp": "aes128-sha1"},
     {"ike": "aes-sha1", "esp": "aes-sha1"},
     Want(ike_algs=_sha1_ike("AES_CBC_256"), esp=("AES_CBC_128", SHA1_96))),
    ("ikev2-algo-06-aes-aes_xcbc", *_same({"ike": "aes-aes_xcbc", "esp": "aes-aes_xcbc"}),
     Want(ike_algs=("AES_CBC_256", "AUTH_AES_XCBC_96", "PRF_AES128_XCBC", "ECP_256"),
          esp=("AES_CBC_128", "AUTH_AES_XCBC_96"))),
    ("ikev2-algo-08-aes_gcm-sha2_512", *_same({"ike": "aes_gcm-sha2_512"}),
     Want(ike_algs=GCM256, esp=("AES_GCM_16_256", ""))),
    ("ikev2-algo-09-camellia", *_same({"esp": "camellia-sha1"}),
     Want(ike_algs=GCM256, esp=("CAMELLIA_CBC_128", SHA1_96))),
    ("ikev2-algo-12-aes-aes_cmac", *_same({"esp": "aes-aes_cmac"}),
     Want(ike_algs=GCM256, esp=("AES_CBC_128", "AUTH_AES_CMAC_96"))),
    # east offers both, west asks for one at a time
    ("ikev2-algo-13-esp-null:md5", {"esp": "null-md5"}, {"esp": "null-md5,null-sha1"},
     Want(esp=("NULL", "AUTH_HMAC_MD5_96"))),
    ("ikev2-algo-13-esp-null:sha1", {"esp": "null-sha1"}, {"esp": "null-md5,null-sha1"},
     Want(esp=("NULL", SHA1_96))),
    # east has the default proposals; each west conn names one group for IKE and PFS
    *[(f"ikev2-algo-16-newer-dh:{g}", {"ike": f"aes-sha2;{g}", "esp": f"aes-sha2;{g}"}, {},
       Want(ike_algs=_sha2_ike("AES_CBC_256", ke), esp=("AES_CBC_256", SHA2_256)))
      for g, ke in (("modp2048", "MODP2048"), ("modp3072", "MODP3072"),
                    ("modp4096", "MODP4096"), ("modp8192", "MODP8192"),
                    ("dh19", "ECP_256"), ("dh20", "ECP_384"), ("dh21", "ECP_521"),
                    ("dh31", "CURVE25519"))],
    # MODP1536 is not among the default groups: IKE_SA_INIT gets NO_PROPOSAL_CHOSEN
    ("ikev2-algo-16-newer-dh:modp1536",
     {"ike": "aes-sha2;modp1536", "esp": "aes-sha2;modp1536"}, {},
     Want(ike=False, notify="NO_PROPOSAL_CHOSEN")),
    # the default ESP proposals have no SHA1
    ("ikev2-algo-17-no-sha1-01", {"esp": "aes128-sha1"}, {},
     Want(ts=None, notify="NO_PROPOSAL_CHOSEN")),
    ("ikev2-algo-17-chacha20_poly1305-ike-esp",
     *_same({"ike": "chacha20_poly1305-sha2_256", "esp": "chacha20_poly1305"}),
     Want(ike_algs=("CHACHA20_POLY1305", "", "PRF_HMAC_SHA2_256", "ECP_256"),
          esp=("CHACHA20_POLY1305", ""))),
    ("ikev2-algo-sha2-03", *_same({"esp": "aes-sha2_384"}),
     Want(ike_algs=GCM256, esp=("AES_CBC_128", "AUTH_HMAC_SHA2_384_192"))),
    ("ikev2-algo-sha2-04", *_same({"esp": "aes-sha2_512"}),
     Want(ike_algs=GCM256, esp=("AES_CBC_128", "AUTH_HMAC_SHA2_512_256"))),
    ("ikev2-algo-ike-sha2-01", *_same({"ike": "3des-sha2_256"}),
     Want(ike_algs=_sha2_ike("3DES", "ECP_256"), esp=("AES_GCM_16_256", ""))),
    ("ikev2-algo-ike-sha2-04", *_same({"ike": "aes128-sha2_256"}),
     Want(ike_algs=_sha2_ike("AES_CBC_128", "ECP_256"), esp=("AES_GCM_16_256", ""))),
    ("ikev2-algo-esn-04", *_same({"esn": "yes", "replay-window": "256"}),
     Want(ike_algs=GCM256, esp=("AES_GCM_16_256", ""), esn=True)),
    ("ikev2-algo-esn-07", {"esn": "yes"}, {"esn": "either"},
     Want(ike_algs=GCM256, esp=("AES_GCM_16_256", ""), esn=True)),
    ("ikev2-algo-pluto-09", *_same({"ike": "aes-sha1;dh19", "esp": "aes-sha1;dh19"}),
     Want(ike_algs=_sha1_ike("AES_CBC_256"), esp=("AES_CBC_128", SHA1_96))),
]


@pytest.mark.parametrize(("name", "west", "east", "want"), _rows(ALGO))
def test_algorithms_match_libreswan(name: str, west: dict, east: dict, want: Want) -> None:
    net = make_net(west, east)
    net.up()
    net.advance(60)
    check(net, want)


# ----------------------------------------------------------------- PSKs from ipsec.secrets
KEY36 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ1234567890"
# (Libreswan test dir, west's ipsec.secrets, east's ipsec.secrets)
SECRETS: list = [
    # east's file has a catch-all ": PSK" before and after the pair's own line: the
    # line naming both IDs wins
    ("ikev2-05-basic-psk", f'@west @east : PSK "{KEY36}"\n',
     f': PSK "globalsecretdistractiontest"\n@east @west : PSK "{KEY36}"\n'
     ': PSK "globalsecretdistractiontest"\n'),
    ("ikev2-11-simple-psk", f'@west @east : PSK "{KEY36}"\n', f'@east @west : PSK "{KEY36}"\n'),
    # a PSK longer than the PRF's block (65 bytes) and one of exactly 64 bytes
    ("ikev2-38-psk-65bytes", *[f'@east @west : PSK "{"0123456789" * 6}01234"\n'] * 2),
    ("ikev2-39-psk-64bytes", *[f'@east @west : PSK "{"1234567890" * 6}1234"\n'] * 2),
]


@pytest.mark.parametrize(("name", "west_secrets", "east_secrets"), _rows(SECRETS))
def test_psk_from_secrets_file(name: str, west_secrets: str, east_secrets: str) -> None:
    net = make_net({}, {})
    net.west.engine.secrets = parse_secrets_text(west_secrets)
    net.east.engine.secrets = parse_secrets_text(east_secrets)
    net.up()
    check(net, Want(ike_algs=GCM256, esp=("AES_GCM_16_256", "")))


def test_psk_distraction_is_not_the_key() -> None:
    """ikev2-05-basic-psk, the other way round: with only the catch-all on east, the
    keys differ and west's AUTH is refused (so the row above used the pair's line)."""
    net = make_net({}, {})
    net.west.engine.secrets = parse_secrets_text(f'@west @east : PSK "{KEY36}"\n')
    net.east.engine.secrets = parse_secrets_text(': PSK "globalsecretdistractiontest"\n')
    net.up()
    check(net, Want(ike=False, notify="AUTHENTICATION_FAILED"))


# ------------------------------------------------------------- more than the first Child SA
E3 = "198.18.0.0/24"  # (Libreswan's 192.0.3.0/24)


@pytest.mark.parametrize("east_left", ["%any", "192.0.2.1"],
                         ids=["ikev2-06-dual-net", "ikev2-06-dual-net-notany"])
def test_dual_net_second_child_on_same_ike_sa(east_left: str) -> None:
    """A second conn (another rightsubnet=) of the same pair of hosts and IDs brings its
    Child SA up with CREATE_CHILD_SA on the existing IKE SA, with PFS in the IKE SA's
    group (Libreswan: xfrm=AES_GCM_16_256-NONE-DH19); east's conns have left=%any or
    west's address."""
    b = {"rightsubnet": E3}
    net = make_net({}, {"left": east_left})
    net.up()
    net.west.engine.add_connection(conn(b, True, "b"))
    net.east.engine.add_connection(conn({**b, "left": east_left}, False, "b"))
    bump_generation()
    net.apply(net.west, net.west.engine.initiate("b", net.now))
    net.run()
    assert len(_ike(net.west, net)) == 1 and len(_ike(net.east, net)) == 1
    got = sorted((c.conn, c.remote_ts[0], c.ke) for c in _children(net.west, net))
    assert got == [("b", E3, "ECP_256"), ("west-east", ENET, "")], net.west.logs()
    assert sorted(c.local_ts[0] for c in _children(net.east, net)) == sorted([E3, ENET])


def test_delete_notify_takes_the_peer_down_too() -> None:
    """ikev2-08-delete-notify (and ikev2-05-basic-psk-oneconf-namespaces' down): west's
    ``ipsec down`` deletes the IKE SA with an INFORMATIONAL Delete; east drops it and its
    Child SA, nothing left in either kernel."""
    net = make_net({}, {})
    net.up()
    assert _children(net.east, net)
    net.apply(net.west, net.west.engine.terminate("west-east", net.now))
    net.run()
    net.advance(10)
    for side in (net.west, net.east):
        assert not side.engine.status(net.now).ike_sas, side.logs()
        assert not side.kernel_sas
    assert any("delet" in m for m in net.east.logs())


def test_transport_psk_and_rekey_child() -> None:
    """ikev2-12-transport-psk: type=transport, esp=3des-sha2: a host-to-host transport
    Child SA (3DES, HMAC_SHA2_256_128), then ``--rekey-child``: the new Child SA replaces
    the old one, which is deleted; still transport mode."""
    keys = {**HOST, "type": "transport", "esp": "3des-sha2"}
    net = make_net(keys, keys)
    net.up()
    check(net, Want(ts=("192.0.2.1/32", "192.0.2.2/32"), mode="transport",
                    esp=("3DES", SHA2_256)))
    old = _children(net.west, net)[0].spi_in
    net.apply(net.west, net.west.engine.rekey_child("west-east", net.now))
    net.run()
    net.advance(5)
    check(net, Want(ts=("192.0.2.1/32", "192.0.2.2/32"), mode="transport",
                    esp=("3DES", SHA2_256)))
    assert _children(net.west, net)[0].spi_in != old
    assert len(net.west.kernel_sas) == len(net.east.kernel_sas) == 2


def test_rekey_ipsec_initiator_only() -> None:
    """ikev2-17-rekey-ipsec: west salifetime=1m rekey=yes rekeymargin=10s, east rekey=no:
    80 s later the Child SA is a new one (west rekeyed it; Libreswan's counters went to
    0 on #3), the same IKE SA, one Child SA on each end."""
    net = make_net({"salifetime": "1m", "rekey": "yes", "rekeymargin": "10s",
                    "rekeyfuzz": "0%"}, {"rekey": "no"})
    net.up()
    first = _children(net.west, net)[0]
    ike = _ike(net.west, net)[0].serial
    net.advance(80)
    check(net, Want())
    now = _children(net.west, net)[0]
    assert now.serial != first.serial and now.spi_in != first.spi_in
    assert _ike(net.west, net)[0].serial == ike


def test_no_rekey_lets_everything_expire() -> None:
    """ikev2-29-no-rekey: ikelifetime=100s (west) / 90s (east), rekey=no on both, west's
    revival impaired: 110 s later no IKE SA, no Child SA, nothing in either kernel."""
    net = make_net({"ikelifetime": "100s", "rekey": "no", "rekeymargin": "20s",
                    "keyingtries": "1"},
                   {"ikelifetime": "90s", "rekey": "no", "rekeymargin": "20s"})
    net.up()
    check(net, Want())
    net.advance(110)
    for side in (net.west, net.east):
        assert not side.engine.status(net.now).ike_sas, side.logs()
        assert not side.kernel_sas, side.logs()


@pytest.mark.parametrize(("key", "why"), [
    ("compress=yes", "IPComp (RFC 3173) not implemented"),
    ("leftcat=yes", "client address translation not implemented"),
    ("pam-authorize=yes", "not implemented"),
], ids=["ikev2-14-compress-mismatch", "ikev2-73-cat-nftables", "ikev2-60-pam"])
def test_unimplemented_features_are_refused_at_load(key: str, why: str) -> None:
    """Libreswan brings these up: ikev2-14-compress-mismatch (west compress=yes, east
    compress=no: a Child SA without IPComp), ikev2-73-cat-nftables (the road's
    leftcat=yes), ikev2-60-pam (east's pam-authorize=yes lets the road in).  Kept
    (documented in docs/config.md): we implement none of them, so a conn asking for one
    is not loaded at all rather than run without it; without the key the same conns
    come up."""
    cfg = parse_config_text("conn c\n\tleft=192.0.2.1\n\tright=192.0.2.2\n"
                            f"\tauthby=secret\n\t{key}\n", "f")
    assert "c" not in cfg.conns
    assert any(f"{key} is not supported" in str(d) and why in str(d)
               for d in cfg.diagnostics), [str(d) for d in cfg.diagnostics]
    net = make_net({}, {})
    net.up()
    check(net, Want())


# ------------------------------------------------ certificates preloaded, no CA (x509)
NO_CA: list = [
    # each end holds its own certificate and the peer's (rightcert=), no CA at all:
    # the peer's certificate is the one preloaded, so it authenticates (Libreswan:
    # "no Certificate Authority in NSS Certificate DB! certificate payloads discarded",
    # then "authenticated peer using preloaded certificate")
    ("ikev2-04-basic-x509-no-ca", "west", (), (), True),
    # west has an unrelated CA (otherca): the same
    ("ikev2-04-basic-x509-no-ca-02", "west", ("otherca",), (), True),
    # west signs with north's certificate; east preloads west's (and, in -mismatch, has
    # the CA that issued north's): AUTHENTICATION_FAILED either way
    ("ikev2-04-basic-x509-no-ca-mismatch", "north", (), ("mainca",), False),
    ("ikev2-04-basic-x509-no-ca-mismatch-02", "north", ("otherca",), (), False),
]


@pytest.mark.parametrize(("name", "west_cert", "west_cas", "east_cas", "ok"), _rows(NO_CA))
def test_x509_preloaded_peer_certificate_without_ca(tmp_path: Path, name: str,
                                                    west_cert: str, west_cas: tuple,
                                                    east_cas: tuple, ok: bool) -> None:
    p = pki()
    ends = Ends(None, None, [p[c].cert for c in west_cas], [p[c].cert for c in east_cas])
    net = x509_net(tmp_path, ends, {"leftcert": west_cert, "rightcert": "east"},
                   {"leftcert": "west", "rightcert": "east"})
    x509_up(net)
    if ok:
        check(net, Want(ike_algs=GCM256, esp=("AES_GCM_16_256", "")))
        assert _ike(net.west, net)[0].remote_id == "192.0.2.2"
    else:
        check(net, Want(ike=False, notify="AUTHENTICATION_FAILED"))


# -------------------------------------------------------------- raw RSA keys (rsasigkey=)
RAW = {"authby": "rsasig", "leftrsasigkey": "%west", "rightrsasigkey": "%east"}
# (Libreswan test dir, west keys, east keys, west's Child SA selectors, ID west sees)
RAWRSA: list = [
    ("ikev2-03-basic-rawrsa", RAW, RAW, (WNET, ENET), "@east"),
    # no leftid=/rightid=: each end is known by its address
    ("ikev2-03-basic-rawrsa-rsasigkey", {**RAW, "leftid": None, "rightid": None},
     {**RAW, "leftid": None, "rightid": None}, (WNET, ENET), "192.0.2.2"),
    # a road warrior (leftid=@road, no subnet) to a gateway with left=%any
    ("ikev2-09-rw-rsa", {**RAW, "leftid": "@road", "leftsubnet": None},
     {**RAW, "leftid": "@road", "leftsubnet": None, "left": "%any"},
     ("192.0.2.1/32", ENET), "@east"),
]


@pytest.mark.parametrize(("name", "west", "east", "ts", "peer"), _rows(RAWRSA))
def test_raw_rsa(nss: dict, name: str, west: dict, east: dict, ts: tuple,  # noqa: F811
                 peer: str) -> None:
    net = asym_net(nss, west, east)
    net.up()
    check(net, Want(ts=ts, ike_algs=GCM256, esp=("AES_GCM_16_256", "")))
    assert _ike(net.west, net)[0].remote_id == peer
    assert any("RSASSA-PSS" in m for m in net.west.logs() if "authenticated peer" in m)


# ------------------------------------------------------------------ road warriors, rekeys
def test_rw_nat() -> None:
    """ikev2-25-rw-nat: road (leftid=@road, leftsubnet= its own inside address) behind a
    NAT, east left=%any: both ends detect the NAT, the Child SA is ESP in UDP (4500)."""
    road = {"leftid": "@road", "leftsubnet": "192.0.2.1/32"}
    net = make_net(road, {**road, "left": "%any"})
    net.nat = True
    net.up()
    # (not check(): the kernel SAs' addresses differ on the two sides of the NAT)
    (w,), (e,) = _ike(net.west, net), _ike(net.east, net)
    (wc,), (ec,) = _children(net.west, net), _children(net.east, net)
    assert (wc.local_ts, wc.remote_ts) == (["192.0.2.1/32"], [ENET]) == \
        (ec.remote_ts, ec.local_ts)
    assert (wc.spi_in, wc.spi_out) == (ec.spi_out, ec.spi_in)
    assert w.nat_detected_local and e.nat_detected_remote
    assert w.local.endswith(":4500") and e.local.endswith(":4500")
    assert all(c.encapsulated for c in _children(net.west, net) + _children(net.east, net))


def test_rw_server_rekeys_the_child() -> None:
    """ikev2-28-rw-server-rekey: east (the responder; left=%any, leftid=@road) runs
    ``--rekey-child``: it initiates CREATE_CHILD_SA on the road's IKE SA, with PFS in
    the IKE SA's group (Libreswan: -DH19), and deletes the old Child SA."""
    road = {"leftid": "@road", "leftsubnet": None}
    net = make_net(road, {**road, "left": "%any"})
    net.up()
    old = _children(net.east, net)[0]
    name = old.conn
    net.apply(net.east, net.east.engine.rekey_child(name, net.now))
    net.run()
    check(net, Want(ts=("192.0.2.1/32", ENET), ke="ECP_256"))
    assert _children(net.east, net)[0].serial != old.serial
    assert len(net.west.kernel_sas) == len(net.east.kernel_sas) == 2


POOL_ROAD = {"leftsubnet": "0.0.0.0/0", "leftmodecfgclient": "yes", "narrowing": "yes",
             "rightsubnet": "0.0.0.0/0"}
POOL_GW = {"left": "%any", "leftsubnet": None, "leftaddresspool": "198.51.100.100-198.51.100.199",
           "rightsubnet": "0.0.0.0/0"}


@pytest.mark.parametrize(("name", "road", "gw", "wait", "rekeyer"), [
    # the road rekeys (ikelifetime=90s, rekeymargin=10s), east has rekey=no
    ("ikev2-41-rw-replace", {"ikelifetime": "90s", "rekey": "yes", "rekeymargin": "10s",
                             "rekeyfuzz": "0%"}, {"rekey": "no"}, 85, "west"),
    # east, the responder, rekeys (ikelifetime=50s, rekeymargin=10s), the road rekey=no
    ("ikev2-42-rw-replace-responder", {"rekey": "no"},
     {"ikelifetime": "50s", "rekey": "yes", "rekeymargin": "10s", "rekeyfuzz": "0%"}, 45,
     "east"),
], ids=["ikev2-41-rw-replace", "ikev2-42-rw-replace-responder"])
def test_rw_ike_sa_rekeyed(name: str, road: dict, gw: dict, wait: int, rekeyer: str) -> None:
    """A road warrior with a lease from east's pool: the IKE SA is rekeyed (CREATE_CHILD_SA,
    RFC 7296 §2.18) by the end with rekey=yes; the Child SA (the lease 198.51.100.100/32
    to 0.0.0.0/0) moves onto the new IKE SA, the old IKE SA is deleted."""
    net = make_net({**POOL_ROAD, **road}, {**POOL_GW, **gw})
    net.up()
    ts = ("198.51.100.100/32", "0.0.0.0/0")
    check(net, Want(ts=ts))
    first = _ike(net.west, net)[0]
    child = _children(net.west, net)[0]
    net.advance(wait)
    check(net, Want(ts=ts))
    (w,) = _ike(net.west, net)
    assert (w.spi_i, w.spi_r) != (first.spi_i, first.spi_r)
    assert [c.spi_in for c in w.children] == [child.spi_in]  # the same Child SA
    side = net.west if rekeyer == "west" else net.east
    assert any("rekey" in m.lower() and "IKE SA" in m for m in side.logs()), side.logs()


def test_init_retransmit_every_packet_twice() -> None:
    """ikev2-43-init-retransmit (impair jacob_two_two: every packet sent twice): the
    duplicate IKE_SA_INIT / IKE_AUTH messages and answers are dropped or answered from
    the cache; one IKE SA, one Child SA."""
    net = make_net({}, {})
    net.dup = True
    net.up()
    net.dup = False
    net.advance(30)
    check(net, Want(ike_algs=GCM256, esp=("AES_GCM_16_256", "")))


def test_ikesa_reauth() -> None:
    """ikev2-20-ikesa-reauth: west ikelifetime=40s rekeymargin=5s reauth=yes: instead of
    rekeying the IKE SA west authenticates afresh (a new IKE_SA_INIT/IKE_AUTH, RFC 7296
    §2.8.3) and the old IKE SA goes; 50 s later one IKE SA and one Child SA, new ones."""
    net = make_net({"ikelifetime": "40s", "rekeymargin": "5s", "reauth": "yes",
                    "rekeyfuzz": "0%"}, {})
    net.up()
    first = _ike(net.west, net)[0]
    child = _children(net.west, net)[0]
    init = sum(1 for s, d in net.sent if s == "west" and d[18] == 34)
    net.advance(50)
    check(net, Want(ike_algs=GCM256))
    (w,) = _ike(net.west, net)
    assert w.serial != first.serial and (w.spi_i, w.spi_r) != (first.spi_i, first.spi_r)
    assert _children(net.west, net)[0].spi_in != child.spi_in
    # a second IKE_SA_INIT (exchange type 34), not a CREATE_CHILD_SA rekey
    assert sum(1 for s, d in net.sent if s == "west" and d[18] == 34) == init + 1


def test_any_psk() -> None:
    """ikev2-61-any-psk: east's conn has left=%any and no leftid= (any peer ID), its
    ipsec.secrets only a catch-all ``: PSK``; west (no leftid=: its address is its ID)
    holds ``@east 192.0.2.1 : PSK``.  Up, east sees west's address as its ID."""
    net = make_net({"leftid": None}, {"leftid": None, "left": "%any"})
    net.west.engine.secrets = parse_secrets_text(f'@east 192.0.2.1 : PSK "{KEY36}"\n')
    net.east.engine.secrets = parse_secrets_text(f': PSK "{KEY36}"\n')
    net.up()
    check(net, Want(ike_algs=GCM256))
    assert _ike(net.east, net)[0].remote_id == "192.0.2.1"
    assert _ike(net.west, net)[0].remote_id == "@east"


# (Libreswan test dir, road keys, east keys, the road's Child SA selectors, NAT)
ROADS: list = [
    # behind a NAT to east's left=%any conn
    ("ikev2-63-anyid-nat", {}, {"left": "%any"}, (WNET, ENET), True),
    # a lease from east's pool, east's selector its own address (rightsubnet=.../32);
    # the road has no subnet of its own: it narrows to the lease
    ("ikev2-48-nat-cp", {"leftsubnet": None, "rightsubnet": None, "narrowing": "yes",
                         "leftid": "@road", "leftmodecfgclient": "yes"},
     {"leftid": "@road", "left": "%any", "leftsubnet": None, "rightsubnet": "192.0.2.2/32",
      "narrowing": "yes", "leftmodecfgclient": "yes",
      "leftaddresspool": "198.51.100.1-198.51.100.200", "modecfgdns": "198.18.1.1"},
     ("198.51.100.1/32", "192.0.2.2/32"), True),
    # the road asks for 0.0.0.0/0 to 0.0.0.0/0, east narrows it to its subnet
    ("ikev2-48-nat-cp-nondefault", POOL_ROAD,
     {**POOL_GW, "rightsubnet": ENET, "narrowing": "yes"},
     ("198.51.100.100/32", ENET), True),
    # east: leftid=%any, a pool, rightsubnet=0/0; the road leftid=@road, rightsubnet=0/0
    ("ikev2-70-src-address-selection",
     {"leftid": "@road", "leftsubnet": None, "rightsubnet": "0.0.0.0/0", "narrowing": "yes",
      "leftmodecfgclient": "yes"},
     {"leftid": "%any", "left": "%any", "leftsubnet": None, "rightsubnet": "0.0.0.0/0",
      "leftaddresspool": "198.51.100.1-198.51.100.200", "narrowing": "yes",
      "leftmodecfgclient": "yes"}, ("198.51.100.1/32", "0.0.0.0/0"), False),
]


@pytest.mark.parametrize(("name", "road", "gw", "ts", "nat"), _rows(ROADS))
def test_road_warriors(name: str, road: dict, gw: dict, ts: tuple, nat: bool) -> None:
    net = make_net(road, gw)
    net.nat = nat
    net.up()
    (w,), (e,) = _ike(net.west, net), _ike(net.east, net)
    (wc,), (ec,) = _children(net.west, net), _children(net.east, net)
    assert (wc.local_ts, wc.remote_ts) == ([ts[0]], [ts[1]]) == (ec.remote_ts, ec.local_ts)
    assert (wc.spi_in, wc.spi_out) == (ec.spi_out, ec.spi_in)
    assert (wc.encr, e.encr) == ("AES_GCM_16_256", "AES_GCM_16_256")
    assert w.nat_detected_local is nat and e.nat_detected_remote is nat
    assert wc.encapsulated is nat and ec.encapsulated is nat


@pytest.mark.parametrize("name", ["ikev2-16-alias-whack-up", "ikev2-16-alias-whack-start"])
def test_alias_brings_up_each_subnet_pair(name: str) -> None:
    """ikev2-16-alias-whack-*: rightsubnets={a, b} makes two conns (c/0x1, c/0x2) of one
    alias; starting the alias brings both up, the first in IKE_AUTH and the second with
    CREATE_CHILD_SA on the same IKE SA."""
    subs = (ENET, "198.18.0.0/24")
    net = Net()
    for side, left in ((net.west, True), (net.east, False)):
        keys = {**BASE, "rightsubnets": "{ " + ", ".join(subs) + " }", "rightsubnet": None}
        text = "conn c\n" + "".join(f"\t{k}={v}\n" for k, v in keys.items() if v is not None)
        cfg = parse_config_text(text, "f")
        assert sorted(cfg.conns) == ["c/0x1", "c/0x2"], [str(d) for d in cfg.diagnostics]
        for c in cfg.conns.values():
            c.local_is_left, c.auto = left, "add"
            side.engine.add_connection(c)
        side.engine.delete_connection("west-east", net.now)
    bump_generation()
    for conn_name in ("c/0x1", "c/0x2"):
        net.apply(net.west, net.west.engine.initiate(conn_name, net.now))
    net.run()
    assert len(_ike(net.west, net)) == 1 and len(_ike(net.east, net)) == 1
    got = sorted((c.conn, c.remote_ts[0]) for c in _children(net.west, net))
    assert got == [("c/0x1", subs[0]), ("c/0x2", subs[1])], net.west.logs()
    assert sorted(c.local_ts[0] for c in _children(net.east, net)) == sorted(subs)
    assert len(net.west.kernel_sas) == len(net.east.kernel_sas) == 4
    assert any("queue Child SA; waiting on IKE SA #1 negotiating" in m
               for m in net.west.logs())


def test_uniqueid_restarted_road_replaces_its_old_ike_sa() -> None:
    """ikev2-27-uniqueid: the road (leftid=@road) comes up, is killed and restarted
    (no Delete sent) and comes up again (Libreswan also moves it to a new address; the
    harness keeps it); east (uniqueids=yes, the default) keeps only the new IKE SA and
    its Child SA, the old ones are gone from its kernel."""
    road = {"leftid": "@road", "leftsubnet": "192.0.2.1/32"}
    net = make_net(road, {**road, "left": "%any"})
    net.up()
    old = _ike(net.east, net)[0]
    fresh = Engine(EngineSettings(), Store(PSK), rng=random.Random(7).randbytes,
                   local_addrs=[WEST])
    fresh.add_connection(conn(road, True))
    net.west.engine = fresh
    net.west.kernel_sas.clear()
    net.up()
    # east sends a Delete for the old IKE SA (the road forgot it and never answers) and
    # removes it at once, as pluto does: only the new SAs are listed, right away
    (e,) = _ike(net.east, net)
    assert len(net.east.engine.status(net.now).ike_sas) == 1
    assert any("replaces this one (uniqueids)" in m for m in net.east.logs())
    assert (e.spi_i, e.spi_r) != (old.spi_i, old.spi_r)
    check(net, Want(ts=("192.0.2.1/32", ENET)))


@pytest.mark.parametrize("nat", [False, True],
                         ids=["ikev2-30-rw-no-rekey", "ikev2-31-nat-rw-no-rekey"])
def test_rw_no_rekey_expires_and_frees_the_lease(nat: bool) -> None:
    """ikev2-30/31-*-no-rekey: a road warrior with a lease (behind a NAT in -31, where
    east also has dpddelay=3), rekey=no on both, ikelifetime=100s (road) / 90s (east):
    after 110 s ("tunnel should be gone") nothing is left on either end."""
    net = make_net({**POOL_ROAD, "ikelifetime": "100s", "rekey": "no",
                    "rekeymargin": "20s", "keyingtries": "1"},
                   {**POOL_GW, "ikelifetime": "90s", "rekey": "no", "rekeymargin": "20s",
                    **({"dpddelay": "3s"} if nat else {})})
    net.nat = nat
    net.up()
    (wc,) = _children(net.west, net)
    assert wc.local_ts == ["198.51.100.100/32"] and wc.encapsulated is nat
    net.advance(110)
    for side in (net.west, net.east):
        st = side.engine.status(net.now)
        assert not st.ike_sas and not side.kernel_sas, side.logs()
    pools = net.east.engine.status(net.now).pools
    assert pools and all(p.in_use == 0 for p in pools)


@pytest.mark.parametrize("east_narrowing", ["no", "yes"],
                         ids=["ikev2-62-host-ondemand", "ikev2-62-host-ondemand-instance"])
def test_host_ondemand(east_narrowing: str) -> None:
    """ikev2-62-host-ondemand(-instance): north's conn (leftsubnet= one inside address,
    to east's host, auto=ondemand) is routed; the first packet's acquire brings it up:
    [198.51.100.254/32===192.0.2.2/32]."""
    keys = {"leftsubnet": "198.51.100.254/32", "rightsubnet": None, "auto": "ondemand"}
    net = make_net(keys, {**keys, "narrowing": east_narrowing})
    acts = net.west.engine.route("west-east", net.now)
    net.apply(net.west, acts)
    (pol,) = [a.policy for a in acts if isinstance(a, AddPolicy)]
    acq = SAAcquire(reqid=pol.reqid,
                    src=TrafficSelector(ipaddress.ip_network("198.51.100.254/32")),
                    dst=TrafficSelector(ipaddress.ip_network("192.0.2.2/32")),
                    local=net.west.addr, remote=net.east.addr)  # type: ignore[arg-type]
    net.apply(net.west, net.west.engine.acquire(acq, net.now))
    net.run()
    check(net, Want(ts=("198.51.100.254/32", "192.0.2.2/32"), ike_algs=GCM256))
