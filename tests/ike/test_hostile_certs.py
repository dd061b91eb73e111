"""Hostile certificates and identities (CVE-REGRESSIONS.md, strongSwan's fuzzing corpora).

Each case is sent by a peer that completed IKE_SA_INIT honestly and then lies in
IKE_AUTH.  The responder must answer (AUTHENTICATION_FAILED), keep no IKE SA and
never reach its internal-error path.  The corpora are read from ``../shared``.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pki import PKI, Issued
from testsupport import damaged, shared_path

from pypluto.config.ids import IdError, parse_id
from pypluto.crypto import revocation
from pypluto.crypto import x509 as px
from pypluto.crypto.der import read_tlv
from pypluto.iana import PayloadType as PT
from pypluto.ike.actions import Log, SendPacket
from pypluto.wire import payloads as wp

from .harness import Net
from .test_certs import cert_net
from .test_hostile import _half_open

CORPORA = ("vectors", "fuzz", "strongswan-fuzzing-corpora")


def _corpus(name: str) -> list[Path]:
    return sorted(p for p in shared_path(*CORPORA, name).iterdir() if p.is_file())


def _no_bug(net: Net, acts: list) -> list[str]:
    """No bug fired on east, and it kept an IKE SA only if it says it is established."""
    lines = [a.message for a in acts if isinstance(a, Log)]
    assert not [m for m in lines if "internal error" in m], lines
    eng = net.east.engine
    assert all(ike.established for ike in eng.by_serial.values()), lines
    return lines


def _refused(net: Net, acts: list) -> list[str]:
    """East answered, logged why, kept nothing, and no bug fired; its log lines."""
    lines = _no_bug(net, acts)
    assert [a for a in acts if isinstance(a, SendPacket)], lines  # an answer, not silence
    assert any("AUTHENTICATION_FAILED" in m for m in lines), lines
    eng = net.east.engine
    assert not eng.by_serial and not eng.ike_sas and not eng.children_in
    return lines


def _auth_with(net: Net, rewrite) -> list:  # noqa: ANN001
    """West's own IKE_AUTH, its payloads passed through ``rewrite`` before sending."""
    ike = _half_open(net)
    payloads = ike.outstanding.task.build(net.west.engine, ike, net.now, [])
    acts = []
    # a large CERT makes several fragments (RFC 7383): all of them are delivered
    for data in net.west.engine.encode(ike, 35, False, 1, rewrite(payloads)):
        acts += net.east.engine.receive(data, ike.remote, ike.local, net.now)
    return acts


def _with_cert(der: bytes):  # noqa: ANN202
    def rewrite(payloads: list) -> list:
        out = [p for p in payloads if p.payload_type != PT.CERT]
        at = next(i for i, p in enumerate(out) if p.payload_type == PT.AUTH)
        return out[:at] + [wp.CertPayload(4, der)] + out[at:]  # 4: X.509 signature
    return rewrite


def _cert_pair(tmp: Path, key: str = "p256") -> tuple[Net, PKI]:
    pki = PKI.build(key)
    return cert_net(tmp, pki.ee("west", key), pki.ee("east", key), pki), pki


@pytest.mark.parametrize("path", _corpus("certs-crash") if shared_path(*CORPORA).exists()
                         else [], ids=lambda p: p.name[:12])
def test_strongswan_crash_certificates_in_ike_auth(tmp_path: Path, path: Path) -> None:
    """strongSwan's certificate crash inputs (27) as the peer's end-entity CERT."""
    net, _ = _cert_pair(tmp_path)
    _refused(net, _auth_with(net, _with_cert(path.read_bytes())))


def _from_hostile_responder(tmp: Path, make: Callable[[PKI], bytes],
                            monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """East answers IKE_AUTH with ``make(pki)`` as its end-entity CERT; west's log lines
    from then on.  West must not reach its internal-error path, nor establish."""
    pki = PKI.build()
    west, east = pki.ee("west"), pki.ee("east")
    net = cert_net(tmp, west, east, pki)
    der = make(pki)
    net.apply(net.west, net.west.engine.initiate("west-east", net.now))
    net.step()  # IKE_SA_INIT request
    net.step()  # IKE_SA_INIT response: west queues IKE_AUTH
    real = px.der
    with monkeypatch.context() as m:
        m.setattr(px, "der", lambda c: der if c.subject == east.cert.subject else real(c))
        while net.queue and net.queue[0][0] is net.west:
            net.step()  # west's IKE_AUTH (its fragments): east answers with the CERT above
    seen = len(net.west.actions)
    net.run()
    lines = [a.message for a in net.west.actions[seen:] if isinstance(a, Log)]
    assert not [m for m in lines if "internal error" in m], lines
    assert not net.established(net.west), lines
    # west said so (RFC 7296 §2.21.2): east, established already, let its end go too
    assert not net.east.engine.by_serial and not net.east.kernel_sas, net.east.logs()
    assert any("could not authenticate us" in m for m in net.east.logs())
    return lines


@pytest.mark.parametrize("path", _corpus("certs-crash") if shared_path(*CORPORA).exists()
                         else [], ids=lambda p: p.name[:12])
def test_strongswan_crash_certificates_from_the_responder(
        tmp_path: Path, path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same inputs the other way: the initiator judges the responder's CERT."""
    lines = _from_hostile_responder(tmp_path, lambda _: path.read_bytes(), monkeypatch)
    assert any("certificate" in m for m in lines), lines


def test_certs_crash_corpus_is_there() -> None:
    assert len(_corpus("certs-crash")) >= 20


def _der_wrap(tag: int, body: bytes) -> bytes:
    """One DER TLV (the project reads them with ``crypto/der.read_tlv``)."""
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def _resign(tbs: bytes, issuer: Issued) -> bytes:
    """A Certificate around ``tbs``, signed by ``issuer`` (ECDSA with SHA-256)."""
    sig = issuer.key.sign(tbs, ec.ECDSA(hashes.SHA256()))  # type: ignore[union-attr,call-arg]
    alg = _der_wrap(0x30, _der_wrap(0x06, bytes.fromhex("2a8648ce3d040302")))  # ecdsa-with-SHA256
    return _der_wrap(0x30, tbs + alg + _der_wrap(0x03, b"\x00" + sig))


def _broken_exponent(pki: PKI, cn: str, exponent: bytes) -> bytes:
    """A certificate for ``cn`` signed by ``pki``'s intermediate whose RSA public
    exponent INTEGER is ``exponent``."""
    key = rsa.generate_private_key(65537, 2048)
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name.from_rfc4514_string(f"CN={cn},O=pypluto test,C=CH"))
            .issuer_name(pki.inter.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .sign(pki.inter.key, hashes.SHA256()))  # type: ignore[arg-type]
    tbs = cert.tbs_certificate_bytes
    # the exponent shrinks by two bytes: the lengths of the enclosing SEQUENCE, BIT
    # STRING, SubjectPublicKeyInfo and TBSCertificate shrink with it
    spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    assert tbs.count(spki) == 1
    body = read_tlv(tbs, 0)[1].replace(spki, _shrunk_spki(spki, exponent))
    return _resign(_der_wrap(0x30, body), pki.inter)


def _invalid_version(pki: PKI, cn: str) -> bytes:
    """``cn``'s certificate from ``pki`` with version 127, signed again."""
    tbs = pki.ee(cn).cert.tbs_certificate_bytes
    at = tbs.index(b"\xa0\x03\x02\x01\x02")  # [0] EXPLICIT INTEGER 2 (v3)
    return _resign(tbs[:at + 4] + b"\x7f" + tbs[at + 5:], pki.inter)


BROKEN = {
    # CVE-2026-14957: no public key comes out of an exponent of 0 (or 1, or even)
    "e=0": (lambda pki, cn: _broken_exponent(pki, cn, b"\x02\x01\x00"), "unusable public key"),
    "e=1": (lambda pki, cn: _broken_exponent(pki, cn, b"\x02\x01\x01"), "unusable public key"),
    "e=2": (lambda pki, cn: _broken_exponent(pki, cn, b"\x02\x01\x02"), "unusable public key"),
    # cryptography raises InvalidVersion, which is no ValueError
    "version=127": (_invalid_version, "bad certificate from the peer"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_ca_signed_certificate_that_cannot_be_used(tmp_path: Path, case: str) -> None:
    """A certificate the trusted CA signed but cryptography cannot use: the responder
    refuses the initiator with AUTHENTICATION_FAILED and a reason."""
    make, why = BROKEN[case]
    net, pki = _cert_pair(tmp_path)
    lines = _refused(net, _auth_with(net, _with_cert(make(pki, "west"))))
    assert any(why in m for m in lines), lines


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_ca_signed_certificate_that_cannot_be_used_from_the_responder(
        tmp_path: Path, case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same certificates sent by the responder: the initiator gives up, saying why."""
    make, why = BROKEN[case]
    lines = _from_hostile_responder(tmp_path, lambda pki: make(pki, "east"), monkeypatch)
    assert any(why in m for m in lines), lines


def test_damaged_certificates_signed_by_the_trusted_ca(tmp_path: Path) -> None:
    """West's own certificate, damaged and then signed again by the trusted
    intermediate CA, so that the damage gets past the signature check into the
    decoding of names, extensions and keys: refused (or, if the damage left a usable
    certificate, established), never an internal error."""
    pki = PKI.build()
    west, east = pki.ee("west"), pki.ee("east")
    tbs = west.cert.tbs_certificate_bytes
    outcomes = {"refused": 0, "established": 0}
    for i, bad in enumerate(damaged(tbs, 300, 11)):
        d = tmp_path / str(i)
        d.mkdir()
        net = cert_net(d, west, east, pki)
        lines = _no_bug(net, _auth_with(net, _with_cert(_resign(bad, pki.inter))))
        outcomes["established" if net.east.engine.by_serial else "refused"] += 1
        if not net.east.engine.by_serial:
            assert any("AUTHENTICATION_FAILED" in m for m in lines), lines
    assert outcomes["refused"] > 200, outcomes


def _shrunk_spki(spki: bytes, exponent: bytes) -> bytes:
    """``spki`` (RSA) with its exponent INTEGER replaced by ``exponent``."""
    _, alg_and_bits, _ = read_tlv(spki, 0)
    _, _, off = read_tlv(alg_and_bits, 0)  # the AlgorithmIdentifier
    _, bits, _ = read_tlv(alg_and_bits, off)
    _, modulus_and_e, _ = read_tlv(bits, 1)  # after the unused-bits octet
    assert modulus_and_e.endswith(b"\x02\x03\x01\x00\x01")
    new_rsa = _der_wrap(0x30, modulus_and_e[:-5] + exponent)
    return _der_wrap(0x30, alg_and_bits[:off] + _der_wrap(0x03, b"\x00" + new_rsa))


@pytest.mark.parametrize("id_type", [9, 2, 3, 11], ids=["DER_ASN1_DN", "FQDN", "RFC822",
                                                        "KEY_ID"])
def test_strongswan_id_corpus_as_idi(id_type: int) -> None:
    """CVE-2013-6075 (a DN ID with short or bad lengths): each of strongSwan's 20 ID
    fuzzing inputs as the IDi of a PSK IKE_AUTH, under each ID type."""
    files = _corpus("ids")
    assert len(files) >= 20
    for path in files:
        net = Net()

        def rewrite(payloads: list, data: bytes = path.read_bytes()) -> list:
            return [wp.IDPayload(id_type, data) if p.payload_type == PT.IDi else p
                    for p in payloads]
        _refused(net, _auth_with(net, rewrite))


def test_strongswan_id_corpus_as_config_ids() -> None:
    """The same inputs as leftid= text: an ID or an IDError, nothing else."""
    for path in _corpus("ids"):
        text = path.read_bytes().decode("utf-8", "replace")
        try:
            parse_id(text)
        except IdError:
            pass


def test_strongswan_ocsp_crash_response() -> None:
    """strongSwan's OCSP response crash input, as the answer of an OCSP responder:
    refused with a reason (OCSPError), no other exception."""
    pki = PKI.build()
    ee = pki.ee("west")
    now = datetime.datetime.now(datetime.UTC)
    files = _corpus("ocsp_rsp-crash")
    assert files
    for path in files:
        with pytest.raises(revocation.OCSPError):
            revocation.ocsp_check(path.read_bytes(), ee.cert, pki.inter.cert, now,
                                  trusted=[pki.root.cert])
