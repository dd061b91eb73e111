"""Three ipsec.conf divergences from Libreswan 5.2, enforced or refused, never ignored.

1. ``esp=``/``ah=`` and ``pfs=`` (Libreswan's ``proposals_pfs_vs_dh_check`` in
   lib/libswan/proposals.c, run by ``extract_connection`` in programs/pluto/connections.c
   for the Child SA proposals only): with ``pfs=no`` each DH of the line is dropped
   with a warning ("ignoring ESP DH algorithm DH19 as PFS policy is disabled"); with
   ``pfs=yes`` either all or no proposals name a DH ("either all or no ESP proposals
   should specify DH"), and never two groups ("more than one IKEv2 ESP DH algorithm
   (DH19, DH20) requires unimplemented CHILD_SA INVALID_KE").  Every proposal ``none``
   with ``pfs=yes``: Libreswan proposes the Child SAs without KE.  ``none`` beside a
   group: Libreswan offers a proposal with KE and one without; pypluto's proposals
   share one PFS group, so it refuses that line instead of offering the group twice.
2. (``leftid=`` unset with ``leftcert=`` is the host's address, as in Libreswan:
   ``tests/ike/test_certs.py::test_unset_leftid_with_leftcert_is_the_address``.)
3. ``ipsec-max-bytes=0`` / ``ipsec-max-packets=0``: Libreswan 5.2 passes 0 to XFRM as
   the hard limit (kernel.c ``setup_half_kernel_state``, kernel_xfrm.c) and Linux
   expires such an SA at its first packet, while pypluto's userspace plane read 0 as
   "no limit": the two planes disagreed.  pypluto refuses 0.  Above 2^63 both are
   capped at 2^63 with Libreswan's warning.

Facts about Libreswan 5.2 are restated from its source, not copied.
"""

from __future__ import annotations

import pytest
from ike.harness import Net  # tests/ is on sys.path (tests/conftest.py)

from pypluto.config.parser import parse_config_text
from pypluto.ike.sa import IKESA
from pypluto.ike.tasks.child_create import ChildCreate
from pypluto.kernel import esp
from pypluto.kernel.xfrm import structs as S
from pypluto.kernel.xfrm.backend import _lifetimes

BASE = "conn c\n\tleft=192.0.2.1\n\tright=192.0.2.2\n\tauthby=secret\n"


def _load(body: str):  # noqa: ANN202
    return parse_config_text(BASE + body, "f")


def _refusal(body: str) -> str:
    """The one error of a conn that does not load; its line is the last key's."""
    cfg = _load(body)
    assert "c" not in cfg.conns
    errors = [d for d in cfg.diagnostics if d.severity == "error"]
    assert len(errors) == 1, [str(d) for d in cfg.diagnostics]
    last = 4 + body.count("\n")
    assert (errors[0].file, errors[0].line) == ("f", last), str(errors[0])
    return str(errors[0])


# ------------------------------------------------------------ 1. esp= / ah= and pfs=
@pytest.mark.parametrize("body", [
    "\tesp=aes_gcm256-none,aes128-sha2;dh19\n",  # 'none' is the AEAD's integrity here
    "\tesp=aes-sha2;dh19,aes-sha2\n",
    "\tesp=aes-sha2,aes_gcm256-dh31\n",
    "\tesp=aes-sha2-none,aes-sha2\n",  # an explicit none counts as "specifies DH"
    "\tpfs=yes\n\tesp=aes-sha2-dh20,aes_gcm128\n",
])
def test_esp_mixing_proposals_with_and_without_dh_is_refused(body: str) -> None:
    msg = _refusal(body)
    assert msg.startswith("f:") and "either all or no ESP proposals should specify DH" in msg


def test_ah_mixing_proposals_with_and_without_dh_is_refused() -> None:
    msg = _refusal("\tphase2=ah\n\tah=sha2_256-dh19,sha1\n")
    assert "ah=sha2_256-dh19,sha1: either all or no AH proposals should specify DH" in msg


def test_esp_with_two_dh_groups_is_refused_in_libreswans_words() -> None:
    """Before: loaded, and the second proposal went out with DH19 added in front of
    its DH20 (one PFS group for the whole SA payload)."""
    msg = _refusal("\tesp=aes-sha2-dh19,aes_gcm256-dh20\n")
    assert "more than one IKEv2 ESP DH algorithm (DH19, DH20) requires unimplemented " \
        "CHILD_SA INVALID_KE" in msg
    msg = _refusal("\tesp=aes-sha2;modp2048,aes-sha2;dh19\n")
    assert "(MODP2048, DH19)" in msg
    msg = _refusal("\tkeyexchange=ikev1\n\tesp=aes-sha2-dh19,aes-sha2-dh20\n")
    assert "more than one IKEv1 ESP DH algorithm (DH19, DH20) is not allowed in quick " \
        "mode" in msg


def test_esp_group_beside_none_is_refused_as_unsupported() -> None:
    """Libreswan offers ``aes-sha2-dh19,aes-sha2-none`` as one proposal with KE DH19
    and one without KE.  Before: pypluto loaded it and offered DH19 in both (the
    ``none`` silently ignored)."""
    cfg = _load("\tesp=aes-sha2-dh19,aes-sha2-none\n")
    assert "c" not in cfg.conns
    (d,) = [d for d in cfg.diagnostics if d.severity == "error"]
    assert (d.file, d.line, d.unsupported) == ("f", 5, True)
    assert "DH NONE beside proposals with a DH group are not supported by pypluto" in str(d)
    for inside in ("aes-sha2-dh19+none", "aes-sha2-none+dh19", "aes-sha2;dh20+none"):
        msg = _refusal(f"\tesp={inside}\n")  # before: none+dh19 took group 0, no KE
        assert "not supported by pypluto" in msg, msg


@pytest.mark.parametrize("body", [
    "\tesp=aes-sha2-dh19,aes_gcm256-dh19\n",  # one group in every proposal
    "\tesp=aes-sha2;dh19+dh20\n",  # several groups inside one proposal: fine there too
    "\tesp=aes-sha2,aes_gcm256\n",  # no DH at all: the IKE SA's group
])
def test_esp_lines_libreswan_accepts_still_load(body: str) -> None:
    cfg = _load(body)
    assert "c" in cfg.conns and cfg.conns["c"].pfs, [str(d) for d in cfg.diagnostics]
    assert not [d for d in cfg.diagnostics if d.severity == "error"]


def test_passthrough_esp_is_not_checked() -> None:
    """Libreswan does not parse esp= of a never-negotiate conn."""
    cfg = parse_config_text("conn c\n\tleft=192.0.2.1\n\tright=192.0.2.2\n"
                            "\ttype=passthrough\n\tauthby=never\n"
                            "\tesp=aes-sha2-dh19,aes-sha2\n", "f")
    assert "c" in cfg.conns, [str(d) for d in cfg.diagnostics]


def test_pfs_no_drops_the_dh_of_esp_with_a_warning() -> None:
    """pfs=no overrides every DH of esp=: Libreswan drops them and says so, one line a
    proposal.  Before: dropped in effect but silently, and kept in the Connection."""
    cfg = _load("\tpfs=no\n\tesp=aes-sha2-dh19,aes_gcm256-none,aes-sha1\n")
    conn = cfg.conns["c"]
    assert not conn.pfs and conn.esp is not None
    assert [p.ke for p in conn.esp] == [(), (), ()]
    warns = [str(d) for d in cfg.diagnostics if d.severity == "warning"]
    assert warns == [
        "f:6: warning: while loading 'c': ignoring ESP DH algorithm DH19 as PFS policy "
        "is disabled",
    ], warns
    cfg = _load("\tpfs=no\n\tesp=aes-sha2-none\n")
    assert [str(d) for d in cfg.diagnostics] == [
        "f:6: warning: while loading 'c': ignoring redundant ESP DH algorithm NONE as PFS "
        "policy is disabled"]
    assert not [d for d in _load("\tpfs=no\n\tesp=aes-sha2\n").diagnostics]


def _west_ike(net: Net) -> IKESA:
    return next(i for i in net.west.engine.by_serial.values() if i.established)


def _logs(net: Net) -> str:
    return "\n".join(net.west.logs() + net.east.logs())


def test_pfs_yes_with_every_proposal_none_means_no_pfs() -> None:
    """``esp=aes-sha2-none`` with pfs=yes: Libreswan's CREATE_CHILD_SA proposals carry
    no KE (DH NONE is dropped when the proposal is emitted), and a request with KE
    finds no proposal.  Before: pypluto ignored the ``none`` and did PFS with the IKE
    SA's group, so a Libreswan peer with the same line refused every CREATE_CHILD_SA."""
    text = "\tesp=aes-sha2-none\n"
    conn = _load(text).conns["c"]
    assert conn.pfs is False
    kw = {"pfs": conn.pfs, "esp": "aes-sha2-none"}
    # a peer written the same way (Libreswan: no PFS) accepts our new Child SA
    net = Net(west_kw=kw, east_kw=kw)
    net.up()
    ike = _west_ike(net)
    net.apply(net.west, net.west.engine.queue(ike, ChildCreate(ike.conn), net.now))
    net.run()
    assert "refused" not in _logs(net), _logs(net)
    assert len(net.children(net.west)) == 2 and not any(c.ke for c in net.children(net.west))
    # and a PFS request meets no proposal, as it does with Libreswan
    net2 = Net(west_kw={"pfs": True}, east_kw=kw)
    net2.up()
    ike2 = _west_ike(net2)
    net2.apply(net2.west, net2.west.engine.queue(ike2, ChildCreate(ike2.conn), net2.now))
    net2.run()
    assert "refused: pfs=no and the request carries a KE payload" in _logs(net2)
    assert len(net2.children(net2.east)) == 1


# ----------------------------------------------- 3. ipsec-max-bytes= / -packets= of 0
@pytest.mark.parametrize("key", ["ipsec-max-bytes", "ipsec-max-packets"])
def test_zero_traffic_limit_is_refused(key: str) -> None:
    """Before: loaded; XFRM got a hard limit of 0 (the SA expires at its first packet,
    as under Libreswan) and the userspace plane read 0 as no limit at all."""
    cfg = _load(f"\t{key}=0\n")
    assert "c" not in cfg.conns
    (d,) = [d for d in cfg.diagnostics if d.severity == "error"]
    assert (d.file, d.line, d.unsupported) == ("f", 5, True)
    assert f"{key}=0 is not supported by pypluto" in str(d)


def test_both_planes_read_the_smallest_limit_alike() -> None:
    """ipsec-max-packets=1 (the smallest accepted): the userspace SA carries one
    packet and XFRM gets 1; unset: no limit on either plane."""
    conn = _load("\tipsec-max-packets=1\n").conns["c"]
    for limit in (conn.ipsec_max_packets, None):
        net = Net(west_kw={"ipsec_max_packets": limit})
        net.up()
        (sa,) = [s for s in net.west.kernel_sas.values() if s.direction == "out"]
        out = esp.make_sa(sa)
        assert isinstance(out, esp.OutboundSA)
        pkt = bytes.fromhex("4500001c000100004011") + bytes(2) + bytes([198, 51, 100, 1,
                                                                        203, 0, 113, 1]) \
            + bytes(8)
        sent = [out.encap(pkt) is not None for _ in range(3)]
        lft = _lifetimes(sa)
        if limit == 1:
            assert sent == [True, False, False] and lft.hard_packet_limit == 1
        else:
            assert sent == [True] * 3 and lft.hard_packet_limit == S.XFRM_INF


@pytest.mark.parametrize(("key", "what"), [("ipsec-max-bytes", "bytes"),
                                           ("ipsec-max-packets", "packets")])
def test_traffic_limit_above_2_63_is_capped_with_libreswans_warning(key: str,
                                                                    what: str) -> None:
    """Libreswan 5.2 (connections.c) caps both at 2^63 and says so; before, pypluto took
    up to 2^64-1 silently (on XFRM, 2^64-1 is its 'no limit')."""
    cfg = _load(f"\t{key}=18446744073709551615\n")
    conn = cfg.conns["c"]
    assert getattr(conn, key.replace("-", "_")) == 2**63
    (d,) = [d for d in cfg.diagnostics if d.severity == "warning"]
    assert (d.file, d.line) == ("f", 5)
    assert f"IPsec max {what} limited to the maximum allowed 2^63" in str(d)
    assert getattr(_load(f"\t{key}=9223372036854775808\n")
                   .conns["c"], key.replace("-", "_")) == 2**63
    assert not [d for d in _load(f"\t{key}=9223372036854775808\n").diagnostics
                if d.severity == "warning"]
