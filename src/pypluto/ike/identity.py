"""IKE identities as the exchanges need them (RFC 7296 §3.5): ours, the expected peer
pattern of a connection, and the peer's ID from the wire in Libreswan's text form."""

from __future__ import annotations

import ipaddress

from pypluto.config import ids
from pypluto.config.model import Connection, Identity
from pypluto.ike.sa import IKESA

_ID_NAMES = {1: "IPV4_ADDR", 2: "FQDN", 3: "USER_FQDN", 5: "IPV6_ADDR", 9: "DER_ASN1_DN",
             11: "KEY_ID", 13: "NULL"}

_DN_SHORT = {"2.5.4.6": "C", "2.5.4.10": "O", "2.5.4.11": "OU", "2.5.4.3": "CN", "2.5.4.7": "L",
             "2.5.4.8": "ST", "2.5.4.5": "SN", "1.2.840.113549.1.9.1": "E"}


def identity_from_wire(id_type: int, data: bytes) -> Identity:
    """An Identity for what the peer sent, with Libreswan's text form."""
    text: str
    try:
        if id_type == 1 and len(data) == 4:
            text = str(ipaddress.IPv4Address(data))
        elif id_type == 5 and len(data) == 16:
            text = str(ipaddress.IPv6Address(data))
        elif id_type == 2:
            text = "@" + data.decode("utf-8", "replace")
        elif id_type == 3:
            text = data.decode("utf-8", "replace")
        elif id_type == 9 and (attrs := ids.dn_attributes(data)) is not None:
            # a comma in a value is escaped, as Libreswan writes it (ikev2-x509-39-OU-comma)
            text = ", ".join(f"{_DN_SHORT.get(o, o)}={v.replace(',', chr(92) + ',')}"
                             for o, v in attrs)
        elif id_type == 11:
            text = "@#0x" + data.hex()
        elif id_type == 13:
            text = "%null"  # RFC 7619 §2.2: the data, if any, is ignored
        else:
            text = f"@~{data.hex()}"
    except ValueError:
        text = data.hex()
    return Identity(id_type, data, text, null=id_type == 13)


def wire_id_problem(id_type: int, data: bytes) -> str | None:
    """Why an ID payload cannot be taken as an identity, or None.  As Libreswan 5.2's
    ``unpack_id``: an ID type it does not support (IKEv1's subnets and ranges, DER_ASN1_GN,
    FC_NAME, unassigned ones) and a NUL in an FQDN or RFC822 name are refused, even by a
    connection that accepts any peer ID (the wire codec refuses an address of the wrong
    length as INVALID_SYNTAX)."""
    if id_type not in _ID_NAMES:
        return f"unsupported ID type {id_type}"
    if id_type in (2, 3) and b"\0" in data:
        return f"{_ID_NAMES[id_type]} ID contains a NUL"
    return None


def id_desc(i: Identity) -> str:
    return f"{_ID_NAMES.get(i.id_type, str(i.id_type))} '{i.text}'"


NULL_ID = Identity(13, b"", "%null", null=True)  # RFC 7619 §2.2 ID_NULL


def is_null_auth(conn: Connection) -> bool:
    """authby=null: NULL authentication (RFC 7619), both ends ID_NULL."""
    return conn.authby == "null"


def local_null(conn: Connection) -> bool:
    """We authenticate with NULL (RFC 7619): ``leftauth=null``, else ``authby=null``."""
    return (conn.local.auth or conn.authby) == "null"


def remote_null(conn: Connection) -> bool:
    """The peer authenticates with NULL: ``rightauth=null``, else ``authby=null``.  Its ID
    is then ID_NULL (RFC 7619 §2.2), whatever else it may claim to be."""
    return (conn.remote.auth or conn.authby) == "null"


def local_identity(ike: IKESA, conn: Connection) -> Identity:
    if local_null(conn):
        return NULL_ID
    if conn.local.id is not None and not conn.local.id.any:
        return conn.local.id
    return ids.id_from_address(conn.local.host_addr or ike.local.addr)


def remote_pattern(conn: Connection) -> Identity | None:
    """The ID the peer must show (``rightid=``, else its address); None for %any.

    ``rightid=%none`` (ipsec.conf(5): "one wishes for it to default") and the other
    wildcards (``%any``) are the default too, as in Libreswan (an unset ID becomes the
    host's address when there is one): only a peer at ``right=%any`` may show any ID."""
    if remote_null(conn):
        return NULL_ID
    if conn.remote.id is not None and not (conn.remote.id.any and
                                           conn.remote.host_addr is not None):
        return conn.remote.id
    if conn.remote.host_addr is not None:
        return ids.id_from_address(conn.remote.host_addr)
    return None  # %any
