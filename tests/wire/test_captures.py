"""Cross-check the codec against real IKEv2 traffic (issue 2 §2; ../shared/vectors/pcaps).

- Openswan unit-test captures: every message parses and re-serializes to the same
  bytes; the SK payloads decrypt with the recorded keys (crypto.sk.SKProtector);
  the inner payloads parse; every field is compared with Wireshark's decode.
- scapy captures (NAT-T with AES-GCM, REDIRECT): every IKE datagram parses; ESP
  and NAT keepalives on port 4500 are told apart from IKE by the non-ESP marker
  (RFC 3948 §2.2) and counted.
- Wireshark's AES-CCM-12 subset: the INFORMATIONAL Delete exchange decrypts.

The datagrams are read from the .pcap/.pcapng files themselves (tests/wire/pcap.py)
and must equal the hex recorded in expected.json.
"""

from __future__ import annotations

import ast
import json
import pathlib
from dataclasses import dataclass, field

import pytest
from testsupport import shared_path

import pypluto.crypto.sk as crypto_sk
from pypluto.crypto.errors import IntegrityError
from pypluto.crypto.registry import Encr, Integ
from pypluto.wire import (
    NON_ESP_MARKER,
    InvalidSyntax,
    Message,
    SKPayload,
    parse_message,
    parse_payloads,
    serialize_payloads,
)

from .pcap import read_udp
from .wsdecode import Comparer, find, one

#: Openswan's key names in its "| ikev2 I|R ..." debug lines -> IANA transform IDs
ENCR = {"aes128": (Encr.AES_CBC, 128), "3des192": (Encr.TRIPLE_DES, None)}
INTEG = {"sha256": Integ.HMAC_SHA2_256_128, "sha1": Integ.HMAC_SHA1_96, "md5": Integ.HMAC_MD5_96}


#: Inner payload chains the test itself made malformed, per its description.txt.
#: lp88: "The provided Ni is corrupt, and so this test case responses with an invalid syntax."
EXPECTED_INNER_REJECT = {("lp88-rekeyv2-inval-R1", "rekeyCI1.pcap", 1): "Nonce payload: 2 bytes"}


@dataclass
class Tally:
    messages: int = 0
    rejected_as_malformed: int = 0
    decrypted: int = 0
    inner_rejected: int = 0
    parsed_inner: int = 0
    undecryptable: int = 0
    fields: int = 0
    esp: int = 0
    keepalive: int = 0
    notes: list[str] = field(default_factory=list)


def _ike_from_udp(payload: bytes, sport: int, dport: int) -> bytes | None | str:
    """The IKE message in a UDP payload, or "esp"/"keepalive" on port 4500 (RFC 3948 §2)."""
    if 4500 in (sport, dport):
        if payload == b"\xff":
            return "keepalive"
        if payload[:4] != NON_ESP_MARKER:
            return "esp"
        return payload[4:]
    return payload


def _check_against_wireshark(cmp: Comparer, frame: dict, msg: Message, raw: bytes) -> None:
    ws = frame.get("wireshark_4.0_decode")
    if ws:
        cmp.message(ws, msg, raw)


def _protectors(keys: list[dict], role: str, msg: Message) -> list:
    out = []
    for k in keys:
        if k["role"] != role or bytes.fromhex(k["spi_i"]) != msg.spi_i:
            continue
        encr, bits = ENCR[k["encr"]]
        out.append(
            crypto_sk.SKProtector(
                encr, bits, INTEG[k["integ"]], bytes.fromhex(k["SK_e"]), bytes.fromhex(k["SK_a"])
            )
        )
    return out


def _decrypt(prots: list, sk: SKPayload) -> bytes | None:
    for prot in prots:
        try:
            return prot.decrypt(sk.aad, sk.body)
        except IntegrityError:
            continue
    return None


def _openswan_dirs() -> list[pathlib.Path]:
    root = shared_path("vectors", "pcaps", "openswan")
    return sorted(p.parent for p in root.glob("*/expected.json"))


def _run_openswan(tally: Tally) -> None:
    for d in _openswan_dirs():
        exp = json.loads((d / "expected.json").read_text())
        udp_cache: dict[str, dict[int, bytes]] = {}
        for frame in exp["frames"]:
            where = f"{d.name}/{frame['pcap']}#{frame['frame']}"
            cap = udp_cache.setdefault(
                frame["pcap"],
                {
                    u.frame: _ike_from_udp(u.payload, u.sport, u.dport)  # type: ignore[misc]
                    for u in read_udp(d / frame["pcap"])
                },
            )
            raw = cap[frame["frame"]]
            assert raw == bytes.fromhex(frame["ike_hex"]), where
            assert isinstance(raw, bytes)
            tally.messages += 1
            ws = frame.get("wireshark_4.0_decode") or {}
            if find(ws, "isakmp.extradata"):
                # Wireshark also flags bytes after the last payload: the message is malformed
                with pytest.raises(InvalidSyntax, match="after the last payload"):
                    parse_message(raw)
                tally.rejected_as_malformed += 1
                tally.notes.append(f"{where}: malformed (trailing bytes), rejected")
                continue
            msg = parse_message(raw)
            assert msg.serialize() == raw, where
            assert (msg.exchange, msg.message_id, msg.flags) == (
                frame["exchange"],
                frame["msgid"],
                frame["flags"],
            ), where
            cmp = Comparer(where=where)
            skd = frame.get("sk_decryption")
            sk = msg.sk
            if sk is not None:
                assert isinstance(sk, SKPayload)
                role = "I" if msg.initiator else "R"
                prots = _protectors(exp["keys"], role, msg)
                plain = _decrypt(prots, sk)
                if not isinstance(skd, dict):
                    # expected.json: "keys in this test do not decrypt this message"
                    assert plain is None, where
                    tally.undecryptable += 1
                    tally.notes.append(f"{where}: no working keys recorded ({len(prots)} tried)")
                else:
                    assert plain is not None, f"{where}: did not decrypt"
                    assert plain.hex() == skd["inner_payloads_hex"], where
                    assert sk.first_inner == skd["inner_first_payload"], where
                    tally.decrypted += 1
                    reason = EXPECTED_INNER_REJECT.get((d.name, frame["pcap"], frame["frame"]))
                    if reason is not None:
                        with pytest.raises(InvalidSyntax, match=reason):
                            parse_payloads(sk.first_inner, plain)
                        tally.inner_rejected += 1
                        tally.notes.append(f"{where}: inner chain rejected as intended: {reason}")
                        # the outer fields are still compared; Wireshark shows the bad chain
                        cmp.inner.pop(id(sk), None)
                        _check_against_wireshark(cmp, frame, msg, raw)
                        assert not cmp.errors, "\n".join(cmp.errors)
                        tally.fields += cmp.count
                        continue
                    inner = parse_payloads(sk.first_inner, plain)
                    assert serialize_payloads(inner) == (sk.first_inner, plain), where
                    cmp.inner[id(sk)] = inner
                    tally.parsed_inner += 1
                    _check_padding(cmp, ws, skd, plain)
            _check_against_wireshark(cmp, frame, msg, raw)
            assert not cmp.errors, "\n".join(cmp.errors)
            tally.fields += cmp.count


def _check_padding(cmp: Comparer, ws: dict, skd: dict, plain: bytes) -> None:
    dec = find(ws, "isakmp.enc.decrypted")
    if not dec:
        return
    pad = one(dec[0], "isakmp.enc.pad_length")
    contained = one(dec[0], "isakmp.enc.contained")
    if pad is not None:
        cmp.eq("isakmp.enc.pad_length", int(pad["show"]), skd["pad_len"])
    if contained is not None:
        cmp.eq("isakmp.enc.contained size", contained["size"], len(plain))


def test_openswan_captures() -> None:
    tally = Tally()
    _run_openswan(tally)
    print(
        f"\nopenswan: {tally.messages} messages, {tally.rejected_as_malformed} rejected as "
        f"malformed, {tally.decrypted} SK payloads decrypted, {tally.parsed_inner} inner chains "
        f"parsed, {tally.inner_rejected} rejected as intended, {tally.undecryptable} "
        f"without keys, {tally.fields} fields compared with Wireshark"
    )
    for n in tally.notes:
        print("  " + n)
    assert tally.messages == 41
    assert tally.decrypted == 23  # vectors/README.md: "23 encrypted messages decrypt and verify"
    assert tally.rejected_as_malformed == 1
    assert tally.inner_rejected == 1 and tally.parsed_inner == 22
    assert tally.fields == 5583  # every compared field of the current captures, pinned


@pytest.mark.parametrize(("name", "want"), [
    ("ikev2_nat_t.pcapng", (30, 24, 0, 1108)),
    ("ikev2_notify_redirect.pcap", (4, 0, 0, 238)),
])
def test_scapy_captures(name: str, want: tuple[int, int, int, int]) -> None:
    """``want``: IKE messages, ESP and keepalive datagrams, fields compared (pinned)."""
    base = shared_path("vectors", "pcaps", "scapy")
    exp = json.loads((base / f"{name}.expected.json").read_text())
    udp = {u.frame: u for u in read_udp(base / name)}
    tally = Tally()
    for frame in exp["frames"]:
        n = int(frame["frame"])
        u = udp[n]
        assert u.payload.hex() == frame["udp_payload_hex"]
        ike = _ike_from_udp(u.payload, u.sport, u.dport)
        if ike in ("esp", "keepalive"):
            assert "ike_hex" not in frame
            tally.esp += ike == "esp"
            tally.keepalive += ike == "keepalive"
            continue
        assert isinstance(ike, bytes) and ike.hex() == frame["ike_hex"]
        msg = parse_message(ike)
        assert msg.serialize() == ike
        tally.messages += 1
        cmp = Comparer(where=f"{name}#{n}")
        _check_against_wireshark(cmp, frame, msg, ike)
        assert not cmp.errors, "\n".join(cmp.errors)
        tally.fields += cmp.count
    print(
        f"\n{name}: {tally.messages} IKE messages parsed, {tally.esp} ESP and "
        f"{tally.keepalive} keepalive datagrams skipped, {tally.fields} fields compared"
    )
    assert (tally.messages, tally.esp, tally.keepalive, tally.fields) == want


def test_wireshark_ccm_subset() -> None:
    base = shared_path("vectors", "pcaps", "wireshark")
    exp = json.loads((base / "ikev2-decrypt-aes128ccm12.subset.expected.json").read_text())
    udp = read_udp(base / "ikev2-decrypt-aes128ccm12.subset-from-scapy.pcap")
    row = exp["wireshark_ikev2_decryption_table_row"].split(",")
    keys = {"I": bytes.fromhex(row[2]), "R": bytes.fromhex(row[3])}
    decrypted = fields = 0
    for frame, u in zip(exp["frames"], udp, strict=True):
        raw = bytes.fromhex(frame["ike_hex"])
        assert u.payload == raw
        msg = parse_message(raw)
        assert msg.serialize() == raw
        cmp = Comparer(where=f"ccm#{frame['frame']}")
        skd = frame.get("sk_decryption")
        if skd:
            info = skd if isinstance(skd, dict) else ast.literal_eval(skd)
            sk = msg.sk
            assert isinstance(sk, SKPayload)
            prot = crypto_sk.SKProtector(Encr.AES_CCM_12, 128, None, keys[info["key_role"]])
            plain = prot.decrypt(sk.aad, sk.body)
            inner = parse_payloads(sk.first_inner, plain)
            assert sk.first_inner == info["inner_first_payload"]
            assert serialize_payloads(inner)[1] == plain
            # the recorded plaintext includes the pad-length octet (pad_len 0)
            assert plain + b"\x00" == bytes.fromhex(info["plaintext_hex"])
            cmp.inner[id(sk)] = inner
            decrypted += 1
        _check_against_wireshark(cmp, frame, msg, raw)
        assert not cmp.errors, "\n".join(cmp.errors)
        fields += cmp.count
    print(f"\nwireshark ccm subset: 4 messages, {decrypted} decrypted, {fields} fields compared")
    assert (decrypted, fields) == (2, 213)


def test_comparer_detects_mismatches() -> None:
    """The Wireshark comparison is not vacuous: a changed field, outer or inner, is reported."""
    d = shared_path("vectors", "pcaps", "openswan", "ct13-parentI3")
    exp = json.loads((d / "expected.json").read_text())
    frame = next(f for f in exp["frames"] if isinstance(f.get("sk_decryption"), dict))
    raw = bytes.fromhex(frame["ike_hex"])
    inner_hex = frame["sk_decryption"]["inner_payloads_hex"]

    def compare(mutate_outer: bool, mutate_inner: bool) -> Comparer:
        msg = parse_message(raw)
        sk = msg.sk
        assert isinstance(sk, SKPayload)
        inner = parse_payloads(sk.first_inner, bytes.fromhex(inner_hex))
        if mutate_outer:
            msg.message_id += 1
        if mutate_inner:
            inner[-1].selectors[0].end_port = 80  # type: ignore[attr-defined]
        cmp = Comparer(where="ct13")
        cmp.inner[id(sk)] = inner
        cmp.message(frame["wireshark_4.0_decode"], msg, raw)
        return cmp

    assert compare(False, False).errors == []
    assert any("messageid" in e for e in compare(True, False).errors)
    assert any("end_port" in e for e in compare(False, True).errors)
