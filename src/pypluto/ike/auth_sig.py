"""Signature authentication in IKE_AUTH: CERT, CERTREQ and signature AUTH payloads
(RFC 7296 §2.15, §3.6-§3.8; RFC 4754; RFC 7427; RFC 8420; RFC 4945 §3).

``ike_auth`` calls these hooks where it builds and checks AUTH:

* :func:`local_sig` / :func:`remote_sig`: whether an end authenticates with a
  signature (``leftauth=``, else ``authby=``);
* :func:`local_id`: ``leftid=`` unset or ``%fromcert`` with ``leftcert=`` is the
  certificate's subject DN;
* :func:`sign`: the CERT payloads to send (``leftsendcert=``: ``always``, or
  ``sendifasked`` when the peer sent a CERTREQ) and the AUTH payload, with the
  RFC 7427 method when the peer sent SIGNATURE_HASH_ALGORITHMS (RSASSA-PSS for
  ``authby=rsasig``/``rsa-sha2``, PKCS#1 v1.5/SHA-1 method 1 for ``rsa-sha1`` or a
  peer without RFC 7427), else RFC 4754 ECDSA;
* :func:`verify`: the peer's certificate (its CERT payloads, else ``rightcert=``)
  validated to a trusted CA (``crypto.x509.verify_chain``), checked against the CRLs,
  its subject or subjectAltName equal to the peer's ID, then the AUTH signature;
  returns the reason of a failure, for one log line;
* :func:`certreq`: the CERTREQ payload naming our trust anchors (SHA-1 of their
  public keys, §3.7).

Raw keys (no certificates): our private key comes from the NSS database by CKAID
(``leftckaid=``, else the CKAID of ``leftrsasigkey=``/``leftpubkey=``) and no CERT is
sent; the peer's AUTH is verified with ``rightrsasigkey=`` (RFC 3110) or ``rightpubkey=``
(SubjectPublicKeyInfo), the key that belongs to ``rightid=``: AUTH method 1 (RSA
PKCS#1 v1.5 SHA-1) or RFC 7427 digital signatures, as with certificates.

The certificate store is ``ctx.secrets.certs`` (``config.certs.CertStore``); without
one, signature authentication fails with a clear reason.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Callable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from pypluto.config import ids
from pypluto.config.certs import CertStore, CredentialError, LocalCred
from pypluto.config.hostkeys import HostKeyError
from pypluto.config.model import Connection, End, Identity
from pypluto.config.revocation import Job, Revocation
from pypluto.crypto import rawkey, sigs
from pypluto.crypto import x509 as px
from pypluto.crypto.errors import CryptoError
from pypluto.iana import AuthMethod, CertEncoding
from pypluto.iana import NotifyType as N
from pypluto.ike import codec
from pypluto.ike.actions import Action, Log
from pypluto.ike.context import IKEContext
from pypluto.ike.identity import id_desc
from pypluto.ike.sa import IKESA
from pypluto.wire import payloads as wp
from pypluto.wire.errors import WireError

SIG_METHODS = {int(AuthMethod.RSA_SIG), int(AuthMethod.ECDSA_SHA256_P256),
               int(AuthMethod.ECDSA_SHA384_P384), int(AuthMethod.ECDSA_SHA512_P521),
               int(AuthMethod.DIGITAL_SIGNATURE)}
_SIG_WORDS = {"rsasig", "rsa", "ecdsa", "rsa-sha1", "rsa-sha2", "rsa-sha2_256", "rsa-sha2_384",
              "rsa-sha2_512", "ecdsa-sha2", "ecdsa-sha2_256", "ecdsa-sha2_384",
              "ecdsa-sha2_512", "eddsa", "pubkey"}
X509 = int(CertEncoding.X509_SIGNATURE)
RSA_MIN_BITS = 512  # Libreswan 5.2 RSA_MIN_OCTETS: no smaller RSA key authenticates a peer


def _words(conn: Connection, end: End) -> list[str]:
    text = end.auth or conn.authby or ""
    return [w.strip().lower() for w in text.replace("|", ",").split(",") if w.strip()]


def local_sig(conn: Connection) -> bool:
    """We sign: our end's auth (``leftauth=``, else ``authby=``) is a signature method and,
    when PSK is also allowed, a certificate is configured."""
    w = _words(conn, conn.local)
    if not any(x in _SIG_WORDS for x in w):
        return False
    return not any(x in ("secret", "psk") for x in w) or conn.local.cert is not None or \
        local_raw(conn)


def local_raw(conn: Connection) -> bool:
    """We sign with a raw key: no ``leftcert=``, and ``leftckaid=``, ``leftrsasigkey=`` or
    ``leftpubkey=`` (not ``%cert``) names it."""
    if conn.local.cert is not None:
        return False
    raw = conn.local.raw
    return bool((raw.get("ckaid") or "").strip()) or any(
        (raw.get(k) or "").strip()[:2].lower() in ("0s", "0x")
        for k in ("rsasigkey", "ecdsakey", "pubkey"))


def remote_raw(conn: Connection) -> rawkey.RawPublicKey | str | None:
    """The peer's raw public key (``rightrsasigkey=``/``rightpubkey=``), the reason it
    cannot be decoded, or None (certificates, ``%cert``)."""
    try:
        return rawkey.end_public_key(conn.remote.raw)
    except rawkey.RawKeyError as e:
        return f"the peer's raw key right{e}"


def _raw_sign_key(ctx: IKEContext, conn: Connection) -> object:
    """Our private key for raw-key authentication, or why there is none."""
    try:
        ck = rawkey.end_ckaid(conn.local.raw)
        want = rawkey.end_public_key(conn.local.raw)
    except rawkey.RawKeyError as e:
        return f"our raw key {e}"
    st = store(ctx)
    if ck is None:
        return ("no leftckaid=, leftrsasigkey=, leftecdsakey= or leftpubkey= for raw-key "
                "authentication")
    if st is None:
        return "no NSS database for the raw key"
    try:
        key = st.hostkeys.private_key(ck)
    except HostKeyError as e:
        return str(e)
    if want is not None and rawkey.spki_der(want) != rawkey.spki_der(
            key.public_key()):
        return f"the private key with CKAID {ck} does not belong to our raw public key"
    return key


def remote_sig(conn: Connection) -> bool:
    """The peer may sign."""
    return any(x in _SIG_WORDS for x in _words(conn, conn.remote))


# the signature words of ``authby=`` / ``rightauth=`` by the key family they allow
_FAMILY_WORDS = {
    "rsa": {"rsasig", "rsa", "rsa-sha1", "rsa-sha2", "rsa-sha2_256", "rsa-sha2_384",
            "rsa-sha2_512"},
    "ecdsa": {"ecdsa", "ecdsa-sha2", "ecdsa-sha2_256", "ecdsa-sha2_384", "ecdsa-sha2_512"},
    "eddsa": {"eddsa"},
}
_SHA1_WORDS = {"rsasig", "rsa", "rsa-sha1"}  # the words that let the peer sign with SHA-1


def peer_scheme_refusal(conn: Connection, method: int, auth_data: bytes) -> str | None:
    """Why the peer's signature scheme is not one its end allows, or None.

    ``rightauth=`` (else ``authby=``) names key families and hashes (ipsec.conf(5)):
    ``ecdsa`` an ECDSA signature, ``rsasig`` an RSA one (PKCS#1 v1.5 or PSS, SHA-1 or
    SHA-2), ``rsa-sha2`` RSASSA-PSS only, ``rsa-sha1`` PKCS#1 v1.5 SHA-1 only,
    ``eddsa`` EdDSA, and a ``_256``/``_384``/``_512`` word that hash only; SHA-1 only in
    AUTH method 1.  A signature that verifies with the peer's key is still refused when
    it is of another kind: the conn says what is enough."""
    words = set(_words(conn, conn.remote))
    if "pubkey" in words:  # any signature the peer's key can make
        return None
    got = sigs.scheme(method, auth_data)
    if got is None:
        return None  # no scheme we know: the signature check refuses it
    family, h = got
    allowed = words & _FAMILY_WORDS[family]
    what = f"authby={conn.remote.auth or conn.authby}"
    if not allowed:
        return f"the peer signed with {family.upper()} (AUTH method {method}), which " \
               f"{what} does not allow"
    if h == sigs.HASH_SHA1 and method == sigs.AUTH_DIGITAL_SIGNATURE:
        # RFC 8247 §3.2.1: SHA-1 MUST NOT be used in RFC 7427 signatures (nor does
        # Libreswan 5.2 take it: SHA-1 is in no sighash policy)
        return f"the peer signed with SHA-1 in an RFC 7427 signature (AUTH method {method})"
    if h == sigs.HASH_SHA1 and not allowed & _SHA1_WORDS:
        return f"the peer signed with SHA-1 (AUTH method {method}), which {what} does not " \
               "allow"
    if family == "rsa" and h != sigs.HASH_SHA1:
        # ipsec.conf(5): rsa-sha1 is PKCS#1 v1.5 with SHA-1, rsa-sha2[_NNN] RSASSA-PSS,
        # rsasig / rsa both (Libreswan 5.2: authby bits rsasig_v1_5 / rsasig + sighash)
        sha2 = allowed - {"rsa-sha1"}
        kind = "RSASSA-PSS" if _is_pss(method, auth_data) else "RSA PKCS#1 v1.5"
        if not sha2 or (kind != "RSASSA-PSS" and not allowed & _SHA1_WORDS):
            return f"the peer signed with {kind} and SHA-2 (AUTH method {method}), which " \
                   f"{what} does not allow"
    only = {hh for w in allowed for sfx, hh in _SUFFIX.items() if w.endswith(sfx)}
    if only and not any(w for w in allowed if not w.endswith(tuple(_SUFFIX))) and \
            h not in only:
        return f"the peer's signature hash (RFC 7427 hash {h}) is not one {what} allows"
    return None


def _is_pss(method: int, auth_data: bytes) -> bool:
    """An RFC 7427 AUTH whose AlgorithmIdentifier is RSASSA-PSS."""
    if method != sigs.AUTH_DIGITAL_SIGNATURE or not auth_data:
        return False
    try:
        return x509_oid(auth_data[1:1 + auth_data[0]]) == "1.2.840.113549.1.1.10"
    except (IndexError, ValueError):
        return False


def store(ctx: IKEContext) -> CertStore | None:
    s = getattr(ctx.secrets, "certs", None)
    return s if isinstance(s, CertStore) else None


def credential(ctx: IKEContext, conn: Connection) -> LocalCred | str:
    """Our certificate and key (``leftcert=``), or why there is none."""
    st = store(ctx)
    if conn.local.cert is None:
        return "no leftcert= for signature authentication"
    if st is None:
        return "no certificate store"
    try:
        return st.local(conn.local.cert)
    except CredentialError as e:
        return str(e)


def local_id(ctx: IKEContext, conn: Connection) -> Identity | None:
    """The certificate's subject DN when ``leftid=%fromcert``.  An unset ``leftid=`` is
    the host's address, certificate or not, as in Libreswan 5.2 (an unset ID is filled
    from the end's address, and only ``%fromcert`` is read from the certificate), and as
    ``identity.remote_pattern`` expects of a peer whose ``rightid=`` is unset."""
    lid = conn.local.id
    if conn.local.cert is None or lid is None or not lid.fromcert:
        return None
    cred = credential(ctx, conn)
    if isinstance(cred, str):
        return None
    subj = cred.cert.subject
    return Identity(ids.ID_DER_ASN1_DN, px.subject_dn_der(cred.cert), ids.dn_text(subj))


_ALGS = {"1.2.840.113549.1.1.10": "RSASSA-PSS", "1.2.840.113549.1.1.11": "RSA-SHA2_256",
         "1.2.840.113549.1.1.12": "RSA-SHA2_384", "1.2.840.113549.1.1.13": "RSA-SHA2_512",
         "1.2.840.10045.4.3.2": "ECDSA-SHA2_256", "1.2.840.10045.4.3.3": "ECDSA-SHA2_384",
         "1.2.840.10045.4.3.4": "ECDSA-SHA2_512", "1.3.101.112": "Ed25519", "1.3.101.113": "Ed448"}


def describe(method: int, auth_data: bytes) -> str:
    """How the peer authenticated, for the "established IKE SA" line."""
    if method == sigs.AUTH_RSA:
        return "authby=rsasig (RSA PKCS#1 v1.5 SHA-1)"
    if method in (sigs.AUTH_ECDSA_256, sigs.AUTH_ECDSA_384, sigs.AUTH_ECDSA_521):
        return f"authby=ecdsa (RFC 4754 method {method})"
    if method == sigs.AUTH_DIGITAL_SIGNATURE:
        try:
            n = auth_data[0]
            oid = x509_oid(auth_data[1:1 + n])
        except (IndexError, ValueError):
            oid = ""
        return f"digital signature {_ALGS.get(oid, oid or '?')} (RFC 7427)"
    return "authby=secret"


def x509_oid(algid: bytes) -> str:
    """The OID of a DER AlgorithmIdentifier, dotted."""
    from pypluto.crypto.der import read_tlv
    tag, body, _ = read_tlv(algid, 0)
    tag2, oid, _ = read_tlv(body, 0)
    if tag != 0x30 or tag2 != 0x06:
        raise ValueError("not an AlgorithmIdentifier")
    first = oid[0]
    parts = [first // 40, first % 40]
    val = 0
    for b in oid[1:]:
        val = (val << 7) | (b & 0x7F)
        if not b & 0x80:
            parts.append(val)
            val = 0
    return ".".join(str(p) for p in parts)


def _init_payloads(ike: IKESA, from_peer: bool) -> list[wp.Payload]:
    """The payloads of the peer's (or our) IKE_SA_INIT message, kept until AUTH."""
    raw = (ike.init_response if ike.initiator else ike.init_request) if from_peer else \
        (ike.init_request if ike.initiator else ike.init_response)
    if not raw:
        return []
    try:
        return list(codec.parse(raw).payloads)
    except WireError:
        return []


def peer_hashes(ike: IKESA) -> set[int]:
    """The peer's SIGNATURE_HASH_ALGORITHMS (RFC 7427 §4), empty when not sent."""
    for p in _init_payloads(ike, True):
        if isinstance(p, wp.NotifyPayload) and p.notify_type == N.SIGNATURE_HASH_ALGORITHMS:
            d = bytes(p.data)
            return {int.from_bytes(d[i:i + 2], "big") for i in range(0, len(d) - 1, 2)}
    return set()


def peer_asked(ike: IKESA, payloads: Sequence[wp.Payload]) -> bool:
    """The peer sent a CERTREQ (in its IKE_SA_INIT or this IKE_AUTH message)."""
    allp = list(_init_payloads(ike, True)) + list(payloads)
    return any(isinstance(p, wp.CertReqPayload) for p in allp)


def certreq(ctx: IKEContext, conn: Connection) -> list[wp.Payload]:
    """CERTREQ naming our trust anchors (§3.7), when the peer may sign."""
    st = store(ctx)
    if st is None or not remote_sig(conn):
        return []
    anchors = st.anchors()
    if conn.remote.ca and os.path.sep in conn.remote.ca:
        try:
            anchors = st.ca_file(conn.remote.ca)
        except CredentialError:
            pass
    hashes = b"".join(px.spki_sha1(c) for c in anchors)
    return [wp.CertReqPayload(X509, hashes)] if hashes else []


_SUFFIX = {"_256": sigs.HASH_SHA2_256, "_384": sigs.HASH_SHA2_384, "_512": sigs.HASH_SHA2_512}


def _method(key: object, words: list[str], hashes: set[int]) -> tuple[int, int, bool]:
    """(AUTH method, RFC 7427 hash, PSS) for our key and the peer's hashes.

    ``authby=rsa-sha2_384`` (and the other ``_NNN`` words) limit the hashes to those.
    """
    family = "rsa" if isinstance(key, rsa.RSAPrivateKey) else \
        "ecdsa" if isinstance(key, ec.EllipticCurvePrivateKey) else "eddsa"
    if words and "pubkey" not in words and not set(words) & _FAMILY_WORDS[family]:
        raise CryptoError(f"our key is {family.upper()}, which authby={','.join(words)} "
                          "does not allow")
    only = {h for w in words for sfx, h in _SUFFIX.items() if w.endswith(sfx)}
    if only:
        hashes = (hashes & only) | (hashes & {sigs.HASH_IDENTITY})
    rfc7427 = bool(hashes)
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        if sigs.HASH_IDENTITY not in hashes:
            raise CryptoError("EdDSA needs RFC 7427 with the Identity hash, not offered by "
                              "the peer")
        return sigs.AUTH_DIGITAL_SIGNATURE, sigs.HASH_IDENTITY, False
    if isinstance(key, rsa.RSAPrivateKey):
        if not rfc7427 or (words and all(w == "rsa-sha1" for w in words)):
            if words and "pubkey" not in words and not set(words) & _SHA1_WORDS:
                raise CryptoError(f"authby={','.join(words)} signs with SHA-2 only (RFC "
                                  "7427), and the peer offered no SHA-2 hash")
            return sigs.AUTH_RSA, sigs.HASH_SHA1, False
    elif isinstance(key, ec.EllipticCurvePrivateKey) and not rfc7427:
        m = {256: sigs.AUTH_ECDSA_256, 384: sigs.AUTH_ECDSA_384, 521: sigs.AUTH_ECDSA_521}
        if key.curve.key_size not in m:
            raise CryptoError(f"no RFC 4754 method for {key.curve.name}")
        return m[key.curve.key_size], 0, False
    order = [sigs.HASH_SHA2_256, sigs.HASH_SHA2_384, sigs.HASH_SHA2_512]
    if isinstance(key, ec.EllipticCurvePrivateKey):  # the hash that matches the curve first
        first = {384: sigs.HASH_SHA2_384, 521: sigs.HASH_SHA2_512}.get(key.curve.key_size)
        if first is not None:
            order = [first] + [h for h in order if h != first]
    for h in order:
        if h in hashes:
            return sigs.AUTH_DIGITAL_SIGNATURE, h, isinstance(key, rsa.RSAPrivateKey)
    raise CryptoError("the peer offers no SHA-2 hash for RFC 7427 signatures")


def sign(ctx: IKEContext, ike: IKESA, conn: Connection, octets: bytes,
         peer_payloads: Sequence[wp.Payload]) -> list[wp.Payload] | str:
    """[CERT...] and AUTH for our side, or why we cannot sign."""
    if local_raw(conn):  # a raw key from the NSS database: no CERT
        key = _raw_sign_key(ctx, conn)
        if isinstance(key, str):
            return key
        try:
            method, h, pss = _method(key, _words(conn, conn.local), peer_hashes(ike))
            data = sigs.sign(method, key, octets, h or sigs.HASH_SHA2_256,  # type: ignore[arg-type]
                             pss=pss)
        except CryptoError as e:
            return f"cannot sign with our raw key: {e}"
        return [codec.auth(method, data)]
    cred = credential(ctx, conn)
    if isinstance(cred, str):
        return cred
    try:
        method, h, pss = _method(cred.key, _words(conn, conn.local), peer_hashes(ike))
        data = sigs.sign(method, cred.key, octets, h or sigs.HASH_SHA2_256, pss=pss)
    except CryptoError as e:
        return f"cannot sign with '{cred.name}': {e}"
    out: list[wp.Payload] = []
    send = (conn.local.sendcert or "sendifasked").lower()
    if send in ("always", "alwayssend", "yes") or (
            send in ("sendifasked", "ifasked") and peer_asked(ike, peer_payloads)):
        out.append(wp.CertPayload(X509, px.der(cred.cert)))
        out += [wp.CertPayload(X509, px.der(c)) for c in ca_certs(conn, cred.cert, cred.chain)]
    out.append(codec.auth(method, data))
    return out


def ca_certs(conn: Connection, cert: x509.Certificate, chain: list[x509.Certificate]
             ) -> list[x509.Certificate]:
    """The CA certificates sent with ours (``sendca=``, roots never): none; the issuer
    of our certificate; all our intermediates (also when unset, see Connection.sendca)."""
    mode = conn.sendca or "all"
    if mode == "none":
        return []
    if mode == "issuer":
        return [c for c in chain if c.subject == cert.issuer][:1]
    return chain


def _peer_id_in_cert(cert: object, peer: Identity) -> bool:
    assert isinstance(cert, x509.Certificate)
    if peer.id_type == ids.ID_DER_ASN1_DN:
        subj = Identity(ids.ID_DER_ASN1_DN, px.subject_dn_der(cert), ids.dn_text(cert.subject))
        return ids.id_matches(peer, subj) and ids.id_matches(subj, peer)
    return px.san_has(cert, peer.id_type, peer.data)


def cert_carries(payloads: Sequence[wp.Payload], pattern: Identity | None,
                 method: int) -> bool:
    """Whether the peer's end-entity CERT carries the ``rightid=`` we expect although
    its ID payload shows another of its names (Libreswan 5.2 matches ``rightid=``
    against the certificate, ikev2-x509-16-multicert: rightid=@name, IDr the subject
    DN).  :func:`verify` then validates that certificate, its signature and, with
    require-id-on-certificate=yes, that the ID payload is in it too."""
    if method not in SIG_METHODS or pattern is None or pattern.any or pattern.null or \
            pattern.fromcert:
        return False
    der = next((bytes(p.data) for p in payloads
                if isinstance(p, wp.CertPayload) and int(p.encoding) == X509), None)
    if der is None:
        return False
    try:
        leaf = x509.load_der_x509_certificate(der)
        if pattern.id_type == ids.ID_DER_ASN1_DN:
            return ids.id_matches(pattern, Identity(ids.ID_DER_ASN1_DN,
                                                    px.subject_dn_der(leaf), ""))
        return px.san_has(leaf, pattern.id_type, pattern.data)
    except px.MALFORMED:
        return False


def local_cert_carries(ctx: IKEContext, conn: Connection, ident: Identity) -> bool:
    """Whether our ``leftcert=`` carries ``ident`` (the initiator's IDr) as its subject
    or a subjectAltName: the peer may name which of our identities it wants."""
    if conn.local.cert is None or ident.any or ident.null:
        return False
    cred = credential(ctx, conn)
    if isinstance(cred, str):
        return False
    return _peer_id_in_cert(cred.cert, ident)


def _same_dn(a: x509.Name, b: x509.Name) -> bool:
    """RFC 5280 §7.1: attribute values compare without regard to case (``rightca="C=cA,
    ..."`` is the CA ``C=CA, ...``, nss-cert-chain-01-ikev2)."""
    if a == b:
        return True
    da, db = a.public_bytes(), b.public_bytes()
    return ids.id_matches(Identity(ids.ID_DER_ASN1_DN, da, ""),
                          Identity(ids.ID_DER_ASN1_DN, db, "")) and \
        ids.id_matches(Identity(ids.ID_DER_ASN1_DN, db, ""),
                       Identity(ids.ID_DER_ASN1_DN, da, ""))


def _ca_names(ctx: IKEContext, conn: Connection, ca: str) -> list[x509.Name]:
    """The CA subjects ``rightca=`` allows: a DN, ``%same`` (our ``leftca=``, which
    defaults to the issuers of our own certificate, ipsec.conf(5)), or a CA file."""
    st = store(ctx)
    own = conn.local.ca
    if ca == "%same" and own and own.strip().lower() not in ("%same", "%any"):
        return _ca_names(ctx, conn, own)
    if ca == "%same":
        cred = credential(ctx, conn)
        if isinstance(cred, str):
            return []
        return [cred.cert.issuer] + [c.subject for c in cred.chain]
    if os.path.sep in ca and st is not None:
        try:
            return [c.subject for c in st.ca_file(ca)]
        except CredentialError:
            return []
    try:
        return [ids.parse_dn(ca)]
    except ids.IdError:
        return []


def cert_under_ca(ctx: IKEContext, conn: Connection, payloads: Sequence[wp.Payload]
                  ) -> bool:
    """Whether the peer's CERT names, among its issuers (those it sent, then the
    store's intermediates), a CA that ``rightca=`` allows: by names only, to pick among
    conns (nss-cert-11-ca-expiring-responder-switch-ikev2-rw); :func:`verify` then
    checks the chosen conn's chain.  True when there is nothing to tell by."""
    ca = conn.remote.ca
    if not ca or ca == "%any":
        return True
    certs: list[x509.Certificate] = []
    for p in payloads:
        if isinstance(p, wp.CertPayload) and int(p.encoding) == X509:
            try:
                certs.append(x509.load_der_x509_certificate(bytes(p.data)))
            except px.MALFORMED:
                return True
    want = _ca_names(ctx, conn, ca)
    if not certs or not want:
        return True
    st = store(ctx)
    pool = certs[1:] + (st.intermediates() if st is not None else [])
    name = certs[0].issuer
    for _ in range(len(pool) + 1):
        if any(_same_dn(w, name) for w in want):
            return True
        up = next((c for c in pool if c.issuer != c.subject and _same_dn(c.subject, name)),
                  None)
        if up is None:
            return False
        name = up.issuer
    return False


def verify(ctx: IKEContext, ike: IKESA, conn: Connection, peer: Identity,
           payloads: Sequence[wp.Payload], method: int, auth_data: bytes, octets: bytes,
           now: float) -> str | None:
    """Check the peer's certificate and signature; the reason of a failure, or None.

    A certificate that ``cryptography`` loads but cannot use further on (a name or
    extension that fails to decode, a public key it refuses) is a reason too, not an
    internal error (``px.MALFORMED``)."""
    try:
        issuer: list[str] = []
        why = _verify(ctx, conn, peer, payloads, method, auth_data, octets, issuer)
        if why is None:  # the CA of the peer's certificate, for PLUTO_PEER_CA
            ike.peer_ca = issuer[0] if issuer else ""
        return why
    except px.MALFORMED as e:
        return f"bad certificate from the peer: {type(e).__name__}: {e}"


def _verify(ctx: IKEContext, conn: Connection, peer: Identity,
            payloads: Sequence[wp.Payload], method: int, auth_data: bytes,
            octets: bytes, issuer: list[str]) -> str | None:
    """``verify``; on success ``issuer`` holds the issuer DN of the peer's certificate
    (Libreswan 5.2's PLUTO_PEER_CA: its style, ``ids.dn_text``), nothing for a raw key."""
    raw = remote_raw(conn)
    if isinstance(raw, str):
        return raw
    if raw is not None:
        return _verify_raw(conn, peer, method, raw, octets, auth_data)
    st = store(ctx)
    if st is None:
        return "no certificate store to verify a signature"
    if not remote_sig(conn):
        return f"peer signed (AUTH method {method}) but the connection expects " \
               f"authby={conn.remote.auth or conn.authby}"
    why = peer_scheme_refusal(conn, method, auth_data)
    if why is not None:
        return why
    certs = [bytes(p.data) for p in payloads
             if isinstance(p, wp.CertPayload) and int(p.encoding) == X509]
    when = datetime.datetime.fromtimestamp(st.clock(), datetime.UTC)  # validity
    try:
        if certs:
            leaf = x509.load_der_x509_certificate(certs[0])
            inter = [x509.load_der_x509_certificate(c) for c in certs[1:]]
        elif conn.remote.cert:
            leaf, inter = st.peer_cert(conn.remote.cert), []
        else:
            return "peer sent no certificate and no rightcert= is configured"
    except (*px.MALFORMED, CredentialError) as e:
        return f"bad certificate from the peer: {e}"
    who = f"'{ids.dn_text(leaf.subject)}'"
    ca = conn.remote.ca
    anchors = st.anchors()
    if ca and os.path.sep in ca:  # rightca=/path/ca.pem: that file is the trust anchor
        try:
            anchors = st.ca_file(ca)
        except CredentialError as e:
            return str(e)
    pinned = False
    try:
        chain = px.verify_chain(leaf, inter + st.intermediates(), anchors, when).chain
    except px.CertError as e:
        # no path to a CA, but it is the very certificate rightcert= preloads: the
        # admin pinned it (Libreswan: "preloaded certificate"), valid now
        if not _pinned(st, conn, leaf, when):
            return f"certificate {who} rejected: {e}"
        chain, pinned = [leaf], True
    why = None if pinned else _revocation(st, st.revocation, chain, when)
    if why:
        return f"certificate {who} rejected: {why}"
    ca = conn.remote.ca
    if ca and ca != "%any":
        want = _ca_names(ctx, conn, ca)
        if not any(_same_dn(w, c.subject) for c in chain[1:] for w in want):
            return f"certificate {who} is not issued under rightca='{ca}'"
    # require-id-on-certificate=no: the peer may claim an ID its certificate does not
    # carry (RFC 4945 §3.1 says it should; ipsec.conf(5) warns what this allows)
    if conn.require_id_on_certificate and not _peer_id_in_cert(leaf, peer):
        return f"peer ID {id_desc(peer)} is neither the subject nor a subjectAltName of " \
               f"certificate {who}"
    key = leaf.public_key()
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < RSA_MIN_BITS:
        return f"certificate {who} has a {key.key_size}-bit RSA key: RSA modulus too " \
               f"small for security: less than {RSA_MIN_BITS} bits"
    if not sigs.verify(method, key, octets, auth_data):
        return f"signature (AUTH method {method}) of {who} does not verify"
    issuer.append(ids.dn_text(leaf.issuer))
    return None


def _pinned(st: CertStore, conn: Connection, leaf: x509.Certificate,
            when: datetime.datetime) -> bool:
    """``leaf`` is the peer certificate ``rightcert=`` preloads, within its validity."""
    if not conn.remote.cert:
        return False
    try:
        pinned = st.peer_cert(conn.remote.cert)
    except CredentialError:
        return False
    return pinned == leaf and \
        pinned.not_valid_before_utc <= when <= pinned.not_valid_after_utc


def _revocation(st: CertStore, rev: Revocation, chain: list[x509.Certificate],
                when: datetime.datetime) -> str | None:
    rev.note(chain)  # its CDPs, for ipsec fetchcrls
    why = px.revoked(chain, [*st.crls(), *rev.crls()], when, st.crl_strict)
    if why and "no current CRL" in why:
        err = next((x for c in chain[1:] if (x := rev.crl_error(c.subject))), "")
        if err:
            why += f"; {err}"
    return why or rev.ocsp_status(chain, when.timestamp())


def _verify_raw(conn: Connection, peer: Identity, method: int, key: rawkey.RawPublicKey,
                octets: bytes, auth_data: bytes) -> str | None:
    """The peer's AUTH checked with its configured raw key, which belongs to its ID."""
    if not remote_sig(conn):
        return f"peer signed (AUTH method {method}) but the connection expects " \
               f"authby={conn.remote.auth or conn.authby}"
    why = peer_scheme_refusal(conn, method, auth_data)
    if why is not None:
        return why
    if conn.remote.id is not None and not ids.id_matches(conn.remote.id, peer):
        return f"peer ID {id_desc(peer)} is not the ID its raw key belongs to " \
               f"({id_desc(conn.remote.id)})"
    if not sigs.verify(method, key, octets, auth_data):
        return f"signature (AUTH method {method}) of {id_desc(peer)} does not verify with " \
               f"its raw key (keyid {rawkey.keyid(key)}): wrong raw key?"
    return None
def revocation_jobs(ctx: IKEContext, payloads: Sequence[wp.Payload],
                    conns: Sequence[Connection] = ()) -> tuple[Revocation, list[Job]] | None:
    """Before IKE_AUTH is judged: the CRL / OCSP fetches the peer's chain needs
    (``config.revocation``), or None.  The caller hands them to the daemon as an
    ``io`` Compute job and judges the message again when they are done.

    Only a chain that validates to a trust anchor (the store's, or a ``rightca=``
    file of one of ``conns``) is fetched for: an unauthenticated peer cannot make us
    fetch URLs of its choosing."""
    st = store(ctx)
    if st is None:
        return None
    rev = st.revocation
    if rev.policy.crlcheckinterval <= 0 and not rev.policy.ocsp_enable:
        return None
    certs = [bytes(p.data) for p in payloads
             if isinstance(p, wp.CertPayload) and int(p.encoding) == X509]
    if not certs:
        return None
    now = st.clock()
    when = datetime.datetime.fromtimestamp(now, datetime.UTC)
    try:
        leaf = x509.load_der_x509_certificate(certs[0])
        inter = [x509.load_der_x509_certificate(c) for c in certs[1:]]
        anchors = list(st.anchors())
        for c in conns:
            if c.remote.ca and os.path.sep in c.remote.ca:
                with contextlib.suppress(CredentialError):
                    anchors += st.ca_file(c.remote.ca)
        chain = px.verify_chain(leaf, inter + st.intermediates(), anchors, when).chain
    except (*px.MALFORMED, px.CertError):
        return None  # judged (and refused) by verify
    jobs = rev.plan(chain, lambda n: st.has_current_crl(n, now), now, ctx.rng)
    if not jobs:
        if rev.policy.ocsp_enable:
            rev.hit(chain, now)
        return None
    return rev, jobs


def fetch_then(ctx: IKEContext, ike: IKESA, rev: Revocation, jobs: list[Job],
               again: Callable[[float], list[Action]], now: float) -> list[Action]:
    """Run the fetches as an ``io`` job; then store their results and call ``again``."""
    st = store(ctx)
    clock = st.clock if st is not None else None
    strict = bool(st is not None and st.crl_strict)

    def then(result: object, t: float) -> list[Action]:
        acts: list[Action] = []
        if isinstance(result, list):
            wall = clock() if clock is not None else t
            for level, line in rev.apply(result, wall, strict):
                acts.append(Log(line, level=level,
                                conn=ike.conn.name, serial=ike.serial))
        return acts + again(t)

    return ctx.compute(ike, lambda: rev.run(jobs), then, now, io=True)
