"""Compare a parsed message with Wireshark's decode (PDML as JSON) field by field.

Used by the capture cross-checks: Wireshark is an independent dissector, so every
field it shows (types, lengths, flags, SPIs, transforms, selectors, data) must
equal what our codec produced.  ``Comparer.count`` counts compared fields.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pypluto.wire import (
    AuthPayload,
    CertPayload,
    CertReqPayload,
    DeletePayload,
    IDPayload,
    KEPayload,
    Message,
    NoncePayload,
    NotifyPayload,
    Payload,
    SAPayload,
    SKFPayload,
    SKPayload,
    TrafficSelector,
    TSPayload,
    VendorIDPayload,
)

Node = dict


def kids(node: Node, name: str) -> list[Node]:
    return [c for c in node.get("children", []) if c.get("name") == name]


def one(node: Node, name: str) -> Node | None:
    found = kids(node, name)
    return found[0] if found else None


def ival(node: Node) -> int:
    return int(node["show"], 0)


def find(node: Node, name: str) -> list[Node]:
    """Every descendant named ``name`` (depth first)."""
    out = []
    for c in node.get("children", []):
        if c.get("name") == name:
            out.append(c)
        out.extend(find(c, name))
    return out


@dataclass
class Comparer:
    """Accumulates compared fields and mismatches."""

    count: int = 0
    errors: list[str] = field(default_factory=list)
    where: str = ""
    #: SK payloads whose inner payloads we decrypted: id(payload) -> inner list
    inner: dict[int, list[Payload]] = field(default_factory=dict)

    def eq(self, what: str, theirs: object, ours: object) -> None:
        self.count += 1
        if theirs != ours:
            self.errors.append(f"{self.where}: {what}: wireshark {theirs!r} != ours {ours!r}")

    def field(
        self, node: Node, name: str, ours: object, conv: Callable[[Node], object] = ival
    ) -> None:
        f = one(node, name)
        if f is not None:
            self.eq(name, conv(f), ours)

    def hexfield(self, node: Node, name: str, ours: bytes) -> None:
        f = one(node, name)
        if f is not None and f.get("value") is not None:
            self.eq(name, f["value"], ours.hex())

    # ------------------------------------------------------------------ message

    def message(self, ws: Node, msg: Message, raw: bytes) -> None:
        self.hexfield(ws, "isakmp.ispi", msg.spi_i)
        self.hexfield(ws, "isakmp.rspi", msg.spi_r)
        self.field(ws, "isakmp.nextpayload", msg.payloads[0].payload_type if msg.payloads else 0)
        version = one(ws, "isakmp.version")
        if version is not None:
            self.field(version, "isakmp.mjver", 2)
            self.field(version, "isakmp.mnver", msg.minor_version)
        self.field(ws, "isakmp.exchangetype", msg.exchange)
        flags = one(ws, "isakmp.flags")
        if flags is not None:
            self.eq("isakmp.flags", ival(flags), msg.flags)
            self.field(flags, "isakmp.flag_i", int(msg.initiator))
            self.field(flags, "isakmp.flag_v", int(msg.higher_version))
            self.field(flags, "isakmp.flag_r", int(msg.response))
        self.hexfield(ws, "isakmp.messageid", msg.message_id.to_bytes(4, "big"))
        self.field(ws, "isakmp.length", len(raw))
        self.chain(kids(ws, "isakmp.typepayload"), msg.payloads)

    def chain(self, nodes: Sequence[Node], payloads: Sequence[Payload]) -> None:
        self.eq("payload count", len(nodes), len(payloads))
        for i, (node, p) in enumerate(zip(nodes, payloads, strict=False)):
            if isinstance(p, SKPayload | SKFPayload):
                nxt = p.first_inner
            else:
                nxt = payloads[i + 1].payload_type if i + 1 < len(payloads) else 0
            self.payload(node, p, nxt)

    def payload(self, node: Node, p: Payload, nxt: int) -> None:
        self.eq("payload type", ival(node), p.payload_type)
        self.field(node, "isakmp.nextpayload", nxt)
        self.field(node, "isakmp.criticalpayload", int(p.critical))
        self.field(node, "isakmp.reserved7", p.header_reserved)
        self.field(node, "isakmp.payloadlength", 4 + len(p.serialize()))
        handler = getattr(self, "_" + type(p).__name__, None)
        if handler is not None:
            handler(node, p)

    # ------------------------------------------------------------------ payloads

    def _SAPayload(self, node: Node, p: SAPayload) -> None:
        props = kids(node, "isakmp.typepayload")
        self.eq("proposal count", len(props), len(p.proposals))
        for pn, prop in zip(props, p.proposals, strict=False):
            self.field(pn, "isakmp.prop.number", prop.number)
            self.field(pn, "isakmp.prop.protoid", prop.protocol_id)
            self.field(pn, "isakmp.spisize", len(prop.spi))
            self.field(pn, "isakmp.prop.transforms", len(prop.transforms))
            self.field(pn, "isakmp.payloadlength", len(prop.serialize(True)))
            self.hexfield(pn, "isakmp.spi", prop.spi)
            tns = kids(pn, "isakmp.typepayload")
            self.eq("transform count", len(tns), len(prop.transforms))
            for tn, t in zip(tns, prop.transforms, strict=False):
                self.field(tn, "isakmp.tf.type", t.type)
                ids = [c for c in tn.get("children", []) if c["name"].startswith("isakmp.tf.id")]
                for idn in ids:
                    self.eq(idn["name"], ival(idn), t.id)
                self.field(tn, "isakmp.payloadlength", len(t.serialize(True)))
                attrs = kids(tn, "isakmp.ike2.attr")
                self.eq("attribute count", len(attrs), len(t.attributes))
                for an, a in zip(attrs, t.attributes, strict=False):
                    self.field(
                        an, "isakmp.ike2.attr.type", a.type, lambda n: int(n["value"], 16) & 0x7FFF
                    )
                    self.field(an, "isakmp.ike2.attr.format", int(a.tv))
                    if isinstance(a.value, int):
                        self.field(an, "isakmp.ike2.attr.key_length", a.value)
                        self.hexfield(an, "isakmp.ike2.attr.value", a.value.to_bytes(2, "big"))
                    else:
                        self.hexfield(an, "isakmp.ike2.attr.value", a.value)

    def _KEPayload(self, node: Node, p: KEPayload) -> None:
        self.field(node, "isakmp.key_exchange.dh_group", p.group)
        self.hexfield(node, "isakmp.key_exchange.data", p.data)

    def _IDPayload(self, node: Node, p: IDPayload) -> None:
        self.field(node, "isakmp.id.type", p.id_type)
        data = one(node, "isakmp.id.data")
        if data is not None:
            self.eq("isakmp.id.data size", data.get("size"), len(p.data))
            for c in data.get("children", []):
                if c["name"].startswith("isakmp.id.data.") and c.get("value") is not None:
                    self.eq(c["name"], c["value"], p.data.hex())

    def _CertPayload(self, node: Node, p: CertPayload) -> None:
        self.field(node, "isakmp.cert.encoding", p.encoding)
        data = one(node, "isakmp.cert.data")
        if data is not None:
            self.eq("isakmp.cert.data size", data.get("size"), len(p.data))

    def _CertReqPayload(self, node: Node, p: CertReqPayload) -> None:
        self.field(node, "isakmp.certreq.type", p.encoding)

    def _AuthPayload(self, node: Node, p: AuthPayload) -> None:
        self.field(node, "isakmp.auth.method", p.method)
        self.hexfield(node, "isakmp.auth.data", p.data)

    def _NoncePayload(self, node: Node, p: NoncePayload) -> None:
        self.hexfield(node, "isakmp.nonce", p.data)

    def _NotifyPayload(self, node: Node, p: NotifyPayload) -> None:
        self.field(node, "isakmp.notify.protoid", p.protocol_id)
        self.field(node, "isakmp.spisize", len(p.spi))
        self.field(node, "isakmp.notify.msgtype", p.notify_type)
        self.hexfield(node, "isakmp.spi", p.spi)
        self.hexfield(node, "isakmp.notify.data", p.data)
        for sub in ("accepted_dh_group",):
            self.field(node, f"isakmp.notify.data.{sub}", int.from_bytes(p.data[:2], "big"))

    def _DeletePayload(self, node: Node, p: DeletePayload) -> None:
        self.field(node, "isakmp.delete.protoid", p.protocol_id)
        self.field(node, "isakmp.spisize", p.spi_size)
        self.field(node, "isakmp.spinum", len(p.spis))
        spis = [n["value"] for n in kids(node, "isakmp.delete.spi")]
        if spis or p.spis:
            self.eq("isakmp.delete.spi", spis, [s.hex() for s in p.spis])

    def _VendorIDPayload(self, node: Node, p: VendorIDPayload) -> None:
        self.hexfield(node, "isakmp.vid_bytes", p.data)

    def _TSPayload(self, node: Node, p: TSPayload) -> None:
        self.field(node, "isakmp.ts.number", len(p.selectors))
        tsn = kids(node, "isakmp.ts.data")
        self.eq("selector count", len(tsn), len(p.selectors))
        for n, s in zip(tsn, p.selectors, strict=False):
            self.field(n, "isakmp.ts.type", s.ts_type)
            if not isinstance(s, TrafficSelector):
                continue
            self.field(n, "isakmp.ts.protoid", s.ip_protocol)
            self.field(n, "isakmp.ts.selector_length", len(s.serialize()))
            self.field(n, "isakmp.ts.start_port", s.start_port)
            self.field(n, "isakmp.ts.end_port", s.end_port)
            fam = "ipv4" if s.start_addr.version == 4 else "ipv6"
            conv = lambda n: ipaddress.ip_address(n["show"])  # noqa: E731
            self.field(n, f"isakmp.ts.start_{fam}", s.start_addr, conv)
            self.field(n, f"isakmp.ts.end_{fam}", s.end_addr, conv)

    def _SKPayload(self, node: Node, p: SKPayload) -> None:
        iv = one(node, "isakmp.enc.iv")
        if iv is not None:
            self.eq("isakmp.enc.iv", iv["value"], p.body[: iv["size"]].hex())
        icd = one(node, "isakmp.enc.icd")
        if icd is not None and icd.get("value"):
            self.eq("isakmp.enc.icd", icd["value"], p.body[len(p.body) - icd["size"] :].hex())
        data = one(node, "isakmp.enc.data")
        if data is not None and iv is not None and icd is not None:
            self.eq("isakmp.enc.data size", data["size"], len(p.body) - iv["size"] - icd["size"])
        dec = one(node, "isakmp.enc.decrypted")
        inner = self.inner.get(id(p))
        if dec is not None and inner is not None:
            contained = one(dec, "isakmp.enc.contained")
            nodes = kids(contained, "isakmp.typepayload") if contained else []
            self.chain(nodes, inner)

    _SKFPayload = _SKPayload
