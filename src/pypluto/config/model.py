"""Typed configuration objects: what ``ipsec.conf`` and ``ipsec.secrets`` mean.

The parser (``config/parser.py``) turns text into these objects; the daemon and
the engine use them directly.  Every value keeps the file:line it came from in
``Connection.origin`` so that any error can name the place (DESIGN.md rule 5).

These classes are the contract between ``config/``, ``ike/`` and ``daemon/``:
add fields freely, but do not rename or remove them without updating every user.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal

# The one alias of each lives in the bottom-layer module; re-exported for old importers.
from pypluto.params import IPAddress as IPAddress
from pypluto.params import IPNetwork as IPNetwork

# The fields the responder's connection index reads (``ike/conn_index.py``): any
# assignment to one of them, on any Connection or End, moves ``generation()`` on and so
# invalidates every index built before (a counter, so nothing can forget to call it).
_CONN_WATCHED = frozenset({"left", "right", "local_is_left", "keyexchange", "authby", "type"})
_END_WATCHED = frozenset({"host", "host_addr"})
_GENERATION = [0]


def generation() -> int:
    """A counter that changes whenever a field the connection index reads is assigned."""
    return _GENERATION[0]


def bump_generation() -> None:
    """Invalidate every connection index (a change they cannot see, e.g. a new dict)."""
    _GENERATION[0] += 1


@dataclass(frozen=True)
class Origin:
    """Where a value came from."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class AlgSpec:
    """One algorithm inside a proposal: IANA transform ID plus optional key length."""

    id: int
    key_bits: int | None = None


@dataclass(frozen=True)
class ProposalSpec:
    """One proposal of an ``ike=`` / ``esp=`` / ``ah=`` line (one ``,``-separated item).

    Each list holds the alternatives of one transform type, in preference order.
    For ``esp=`` with an AEAD cipher ``integ`` is empty; for ``ike=`` ``prf`` is
    never empty once the defaults are applied.  ``ke`` empty means "no KE" (for
    ``esp=``: PFS uses the IKE SA's group, as Libreswan does).
    """

    encr: tuple[AlgSpec, ...] = ()
    prf: tuple[int, ...] = ()
    integ: tuple[int, ...] = ()
    ke: tuple[int, ...] = ()
    esn: tuple[int, ...] = ()  # ESN transform IDs; empty = engine decides from conn.esn
    # RFC 9370 additional key exchanges: addke[i] holds the alternatives of ADDKE(i+1)
    # (KE transform IDs; 0 = NONE, i.e. optional)
    addke: tuple[tuple[int, ...], ...] = ()


@dataclass
class Identity:
    """An IKE identity (RFC 7296 §3.5): ID type and its payload bytes.

    ``text`` is the form the user wrote (``@east.example``, ``192.0.2.1``,
    ``C=CH, O=Test, CN=x``); ``any`` is true for ``%any`` (matches every ID).
    ``id_type`` uses the IANA ID Type numbers (1 IPV4_ADDR, 2 FQDN, 3 RFC822_ADDR,
    5 IPV6_ADDR, 9 DER_ASN1_DN, 11 KEY_ID, 0 for %any/%null placeholders).
    """

    id_type: int
    data: bytes
    text: str
    any: bool = False
    null: bool = False  # %null (RFC 7619 ID_NULL = 13)
    fromcert: bool = False  # %fromcert

    def __str__(self) -> str:
        return self.text


@dataclass
class End:
    """One side of a connection (``left*`` or ``right*`` keys)."""

    host: str | None = None  # as written: an address, a name, %any, %defaultroute, %none
    host_addr: IPAddress | None = None  # resolved address, None for %any / unresolved
    nexthop: str | None = None
    id: Identity | None = None  # None = default: the host's address
    subnets: list[IPNetwork] = field(default_factory=list)  # empty = the host itself
    protoport: tuple[int, int] = (0, 0)  # (IP protocol, port); 0 = any
    sourceip: list[IPAddress] = field(default_factory=list)
    auth: str | None = None  # leftauth=: psk, secret, rsasig, ecdsa, null, eaponly...
    cert: str | None = None
    ca: str | None = None
    sendcert: str | None = None
    updown: str | None = None
    ikeport: int | None = None
    vti_ip: str | None = None
    interface_ip: str | None = None  # leftinterface-ip= ADDR/PREFIX (ipsec-interface=)
    modecfgserver: bool = False
    modecfgclient: bool = False
    xauthserver: bool = False
    xauthclient: bool = False
    xauthusername: str | None = None
    addresspool: str | None = None
    raw: dict[str, str] = field(default_factory=dict)  # every left*/right* key as written

    @property
    def is_any(self) -> bool:
        return self.host in (None, "%any", "%any6", "%opportunistic", "%group")

    @property
    def nexthop_addr(self) -> IPAddress | None:
        """``nexthop=`` as an address (written, or the gateway %defaultroute resolved
        to); None for %direct / %defaultroute unresolved / unset."""
        nh = self.nexthop
        if not nh or nh.startswith("%"):
            return None
        try:
            return ipaddress.ip_address(nh)
        except ValueError:
            return None


class _Watched:
    """A dataclass field whose every assignment moves ``generation()`` on; the value
    stays in the instance dict under the field's own name (so code that fills
    ``__dict__`` directly, as the parser's copies do, still works).  Only the watched
    fields of End and Connection pay for it, not every field an ``End(...)`` or a
    ``Connection(...)`` sets.

    It has ``__set__`` and no ``__get__``: a read finds the value in the instance dict
    in C, with no Python call (the engine reads ``conn.left``/``local_is_left`` dozens
    of times per IKE SA).  Every dataclass ``__init__`` sets the field, so the instance
    dict always holds it."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __set__(self, obj: object, value: object) -> None:
        _GENERATION[0] += 1
        obj.__dict__[self.name] = value


for _name in _END_WATCHED:  # after @dataclass: __init__ keeps the defaults it captured
    setattr(End, _name, _Watched(_name))


ConnType = Literal["tunnel", "transport", "passthrough", "drop", "reject"]
AutoMode = Literal["ignore", "add", "start", "up", "route", "ondemand", "keep"]


@dataclass
class Connection:
    """A resolved ``conn`` section (after ``%default`` and ``also=``)."""

    name: str
    left: End = field(default_factory=End)
    right: End = field(default_factory=End)
    origin: Origin | None = None  # the "conn NAME" line
    origins: dict[str, Origin] = field(default_factory=dict)  # key -> where it was set
    raw: dict[str, str] = field(default_factory=dict)  # every key as written (resolved)

    # which end is this host: True = left, False = right, None = not oriented yet
    local_is_left: bool | None = None

    keyexchange: str = "ikev2"  # ikev1 | ikev2
    # secret, rsasig, ecdsa, null, never, ...; unset: Libreswan's default (RSA signatures,
    # PSS or PKCS#1 v1.5, and ECDSA), which is wider than an explicit authby=rsasig
    authby: str = "rsasig,ecdsa"
    auto: AutoMode = "ignore"
    type: ConnType = "tunnel"
    ike: list[ProposalSpec] | None = None  # None = Libreswan's defaults
    esp: list[ProposalSpec] | None = None  # None = Libreswan's defaults
    ah: list[ProposalSpec] | None = None
    phase2: str = "esp"  # esp | ah
    pfs: bool = True
    # ms-dh-downgrade=: a CREATE_CHILD_SA Child SA may go without PFS after all (we offer
    # each proposal again with KE NONE, and accept a request without KE): Windows rekeys
    # so; Libreswan does the same with this key
    ms_dh_downgrade: bool = False
    esn: str = "either"  # yes | no | either
    compress: bool = False

    ikelifetime: float = 8 * 3600.0  # seconds
    salifetime: float = 8 * 3600.0  # ipsec-lifetime / keylife / lifetime
    rekeymargin: float = 9 * 60.0
    rekeyfuzz: float = 100.0  # percent
    rekey: bool = True
    reauth: bool = False
    keyingtries: int = 0  # 0 = forever
    # on-demand (auto=route|ondemand, ike/traps.py): what the packets of a trap get while
    # it negotiates, and after a failed negotiation (for shuntlifetime=)
    negotiationshunt: str = "hold"  # hold | passthrough | drop
    failureshunt: str = "none"  # none | passthrough | drop | reject
    retransmit_interval: float = 0.5  # seconds
    retransmit_timeout: float = 60.0  # seconds
    replay_window: int = 128
    ipsec_max_bytes: int | None = None
    ipsec_max_packets: int | None = None

    dpddelay: float = 0.0  # seconds; 0 = liveness off
    dpdtimeout: float = 0.0
    dpdaction: str = "hold"  # hold | clear | restart

    fragmentation: str = "yes"  # yes | no | force
    mobike: bool = False
    narrowing: bool = False
    encapsulation: str = "auto"  # auto | yes | no
    nat_keepalive: bool = True
    initial_contact: bool = False  # Libreswan 5.2 default: no
    send_vendorid: bool = False
    # fake-strongswan=: IKE_SA_INIT also carries strongSwan's unversioned Vendor ID
    fake_strongswan: bool = False
    uniqueids: bool | None = None  # None = from config setup
    mark: str | None = None  # mark= as written (status); the effect is mark_in/mark_out
    # mark= / mark-in= / mark-out=: (value, mask) of the inbound / outbound SA and
    # policies; value -1 (config.values.UNIQUE_MARK) = a unique mark per instance
    mark_in: tuple[int, int] | None = None
    mark_out: tuple[int, int] | None = None
    # vti-interface= / vti-routing= / vti-shared= (route-based VPN on a VTI device,
    # XFRM only; daemon/vti.py): the device's ikey/okey are the mark-in/mark-out values
    vti_interface: str | None = None
    # nflog=N: the conn's cleartext traffic is copied to netlink log group N (iptables
    # NFLOG rules, daemon/nflog.py); 0 = none
    nflog: int = 0
    vti_routing: bool = True  # Libreswan's default: route the remote subnet via the VTI
    vti_shared: bool = False  # several conns share the device (its remote is any)
    # ipsec-interface=N (yes = 1): route-based VPN on the device ipsecN; None = no
    ipsec_interface: int | None = None
    reqid: int | None = None
    # mtu= / metric=: the MTU and the metric of the routes for the remote selectors
    # (userspace plane: its routes into the TUN device; XFRM: a route via the peer's
    # next hop, as Libreswan's updown adds one); None = not set
    mtu: int | None = None
    metric: int | None = None
    priority: int = 0  # priority= of the conn's policies (lower wins); 0 = computed
    # hostaddrfamily= (4 or 6): the family of left=/right= (for names and %defaultroute);
    # None = from the addresses written, else IPv4 (daemon/resolver.py, defaultroute.py)
    hostaddrfamily: int | None = None
    debug: str = ""  # debug= (alias plutodebug=): this conn's debug classes, as written
    # tfc=: TFC padding of our tunnel-mode ESP packets to that size (RFC 4303 §2.7),
    # 0 = none; send-no-esp-tfc=: tell the peer not to pad its own (RFC 7296 §3.10.1)
    tfc: int = 0
    send_no_esp_tfc: bool = False
    # encap-dscp= (default yes) / decap-dscp= / nopmtudisc=: the XFRM SA flags that copy
    # the inner DSCP to the outer header, the outer one back, and turn PMTU discovery
    # off (ipsec.conf(5): XFRM only; the userspace plane refuses the non-default ones)
    encap_dscp: bool = True
    decap_dscp: bool = False
    nopmtudisc: bool = False
    # sha2-truncbug=: our ESP SAs with HMAC-SHA2-256 use the draft's 96-bit ICV, not
    # RFC 4868's 128 bits (not negotiated: both ends must say so), as Libreswan does
    sha2_truncbug: bool = False
    # ignore-peer-dns=yes: the DNS servers and domains of a gateway's CFG_REPLY are
    # logged and dropped (no PLUTO_PEER_DNS_INFO / PLUTO_PEER_DOMAIN_INFO)
    ignore_peer_dns: bool = False
    # sendca=: which CA certificates go with our end certificate (none | issuer | all);
    # None = unset: every intermediate we have (RFC 7296 §3.6: certificates available
    # to the sender SHOULD be included; Libreswan's default is none)
    sendca: str | None = None
    require_id_on_certificate: bool = True  # the peer's ID must be in its certificate
    ppk: str = "no"  # no | permit | propose | insist (RFC 8784)
    ppk_ids: list[bytes] = field(default_factory=list)  # ppk-ids=, in order
    also: list[str] = field(default_factory=list)
    # the conn name written in ipsec.conf when this conn is one (left, right) pair of
    # its leftsubnets=/rightsubnets= (named NAME/LxR); ``ipsec up NAME`` acts on all
    connalias: str | None = None
    # connalias=: more names that whack / ipsec commands accept for this conn
    aliases: list[str] = field(default_factory=list)

    def answers_to(self, name: str) -> bool:
        """Is ``name`` one of this conn's aliases (connalias=, or the conn whose
        leftsubnets=/rightsubnets= made it)?"""
        return self.connalias == name or name in self.aliases

    # --- orientation helpers -------------------------------------------------
    @property
    def local(self) -> End:
        if self.local_is_left is None:
            raise ValueError(f'"{self.name}": connection is not oriented')
        return self.left if self.local_is_left else self.right

    @property
    def remote(self) -> End:
        if self.local_is_left is None:
            raise ValueError(f'"{self.name}": connection is not oriented')
        return self.right if self.local_is_left else self.left

    def orient(self, local_addresses: set[IPAddress]) -> bool:
        """Decide which end is this host, as pluto does: the end whose address is local.

        Returns True when oriented.  An end with ``%any`` is never the local one
        unless the other end is a local address.
        """
        left_local = self.left.host_addr is not None and self.left.host_addr in local_addresses
        right_local = self.right.host_addr is not None and self.right.host_addr in local_addresses
        if left_local and not right_local:
            self.local_is_left = True
        elif right_local and not left_local:
            self.local_is_left = False
        elif left_local and right_local:
            self.local_is_left = True  # both local (loopback tests): left wins, as pluto
        else:
            self.local_is_left = None
        return self.local_is_left is not None


for _name in _CONN_WATCHED:  # after @dataclass, as for End: only these 6 fields pay
    setattr(Connection, _name, _Watched(_name))


@dataclass
class SetupConfig:
    """The ``config setup`` section.  Command-line options override these."""

    origins: dict[str, Origin] = field(default_factory=dict)
    raw: dict[str, str] = field(default_factory=dict)

    logfile: str | None = None
    logtime: bool = True
    logappend: bool = True
    logip: bool = True
    audit_log: bool = True
    plutodebug: list[str] = field(default_factory=list)
    uniqueids: bool = True
    listen: str | None = None
    nhelpers: int = -1
    keep_alive: int = 20  # seconds (Libreswan's default NAT keep-alive delay)
    virtual_private: str | None = None
    myvendorid: str | None = None
    ike_socket_bufsize: int | None = None  # bytes (SO_RCVBUFFORCE / SO_SNDBUFFORCE)
    xfrmlifetime: int | None = None  # s a trap's acquire lives (net.core.xfrm_acq_expires)
    nflog_all: int | None = None  # NFLOG group for all IPsec traffic (daemon/nflog.py)
    crl_strict: bool = False
    crlcheckinterval: float = 0.0
    curl_timeout: float = 5.0  # revocation fetching (config/revocation.py, issue 14)
    curl_iface: str | None = None  # the fetches leave through it (daemon/fetch.py)
    ocsp_enable: bool = False
    ocsp_strict: bool = False
    ocsp_uri: str = ""
    ocsp_timeout: float = 2.0
    ocsp_trustname: str = ""
    ocsp_cache_size: int = 1000
    ocsp_cache_min_age: float = 3600.0
    ocsp_cache_max_age: float = 86400.0
    ocsp_method: str = "get"
    ipsecdir: str = "/etc/ipsec.d"
    nssdir: str = "/var/lib/ipsec/nss"
    secretsfile: str = "/etc/ipsec.secrets"
    dumpdir: str = "/run/pluto"
    rundir: str = "/run/pluto"
    protostack: str | None = None
    ddos_mode: str = "auto"  # auto | busy | unlimited
    ddos_ike_threshold: int = 25000
    max_halfopen_ike: int = 50000
    seedbits: int = 0
    statsbin: str | None = None
    metrics_listen: str | None = None  # pypluto addition: [ADDRESS:]PORT of /metrics
    secctx_attr_type: int | None = None
    ipsec_interface_managed: bool = True  # pluto creates / deletes the ipsecN devices


@dataclass
class Secret:
    """One record of ``ipsec.secrets``.  ``value`` must never be logged."""

    kind: Literal["PSK", "XAUTH", "PPKS", "RSA", "ECDSA", "PIN"]
    indices: list[Identity]  # empty = matches any pair
    value: bytes = field(repr=False, default=b"")
    ppk_id: bytes | None = None  # PPKS only
    origin: Origin | None = None

    def __repr__(self) -> str:  # never show the secret
        return f"Secret({self.kind}, {[str(i) for i in self.indices]}, <{len(self.value)} bytes>)"
