"""The text parsers the interop suite relies on (no root, no peers needed)."""

from __future__ import annotations

from lab import parse_ping
from peers import PROPOSALS, ipsec_conf, parse_list_sas, swanctl_conf

LIST_SAS = """\
east-west: #2, ESTABLISHED, IKEv2, a177889c3db52cba_i f1c4f33b57bd45bb_r*
  local  'east.example' @ 192.0.2.2[4500]
  remote 'west.example' @ 192.0.2.1[4500]
  AES_CBC-256/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/ECP_256
  established 2s ago, rekeying in 13100s
  net: #1, reqid 1, DELETED, TUNNEL-in-UDP, ESP:AES_CBC-256/HMAC_SHA2_256_128
    installed 2s ago, rekeying in 3547s, expires in 3958s
    in  4fe2cae0,      0 bytes,     0 packets
    out dfdbeb6b,      0 bytes,     0 packets
    local  203.0.113.0/24
    remote 198.51.100.0/24
  net: #2, reqid 1, INSTALLED, TUNNEL-in-UDP, ESP:AES_CBC-256/HMAC_SHA2_256_128/ECP_256
    installed 2s ago, rekeying in 3404s, expires in 3958s
    in  0a912b9a,   1234 bytes,    10 packets,     0s ago
    out ca295e88, 1120264 bytes,   800 packets,     0s ago
    local  203.0.113.0/24
    remote 198.51.100.0/24
"""


def test_parse_list_sas() -> None:
    (ike,) = parse_list_sas(LIST_SAS)
    assert (ike.name, ike.uid, ike.state) == ("east-west", 2, "ESTABLISHED")
    assert (ike.spi_i, ike.spi_r) == ("a177889c3db52cba", "f1c4f33b57bd45bb")
    old, new = ike.children
    assert (old.state, old.spi_in, old.mode) == ("DELETED", "4fe2cae0", "TUNNEL-in-UDP")
    assert new.algs == "AES_CBC-256/HMAC_SHA2_256_128/ECP_256"
    assert (new.spi_in, new.spi_out, new.bytes_in, new.bytes_out) == (
        "0a912b9a", "ca295e88", 1234, 1120264)
    assert parse_list_sas("") == []


def test_parse_ping() -> None:
    assert parse_ping("3 packets transmitted, 2 received, 33% packet loss, time 402ms") == (3, 2)
    assert parse_ping("connect: Network is unreachable") == (0, 0)


def test_configs_carry_the_proposal() -> None:
    p = PROPOSALS[3]
    conf = ipsec_conf(proposal=p, auto="start", extra="dpddelay=2\ndpdaction=restart")
    assert "\tike=chacha20poly1305-sha2_512-dh20\n" in conf and "\tesp=chacha20poly1305\n" in conf
    assert "\tauto=start\n\tdpddelay=2\n\tdpdaction=restart\n" in conf
    assert "ike=" not in ipsec_conf(proposal=PROPOSALS[0])
    sw = swanctl_conf(conn="c", local="192.0.2.2", remote="192.0.2.1", local_id="a",
                      remote_id="b", local_ts="203.0.113.0/24", remote_ts="198.51.100.0/24",
                      proposal=p)
    assert "proposals = chacha20poly1305-prfsha512-ecp384" in sw
    assert "esp_proposals = chacha20poly1305" in sw
