"""PSK lookup as Libreswan 5.2 does it: by the two IDs only, scored as
``lsw_find_secret_by_id`` (lib/libswan/secrets.c), with the road-warrior
``%ANYADDR`` peer of ``lsw_get_secret`` (programs/pluto/keys.c).

There is no fallback from IDs to host addresses: an address-indexed record is found
only when an ID is that address (an unset ``leftid=``/``rightid=``).
"""

from __future__ import annotations

import ipaddress

import pytest
from ike.harness import EAST, WEST, Net  # tests/ is on sys.path (tests/conftest.py)

from pypluto.config.ids import parse_id
from pypluto.config.secrets import parse_secrets_text

ip = ipaddress.ip_address
KEY = "0123456789abcdef0123456789"


def _store(text: str):  # type: ignore[no-untyped-def]
    s = parse_secrets_text(text, "ipsec.secrets")
    assert s.ok, [str(d) for d in s.diagnostics]
    return s


def test_found_by_the_two_ids_in_either_order() -> None:
    s = _store(f'@west @east : PSK "{KEY}-we"\n')
    assert s.psk_for(parse_id("@west"), parse_id("@east")) == f"{KEY}-we".encode()
    assert s.psk_for(parse_id("@east"), parse_id("@west")) == f"{KEY}-we".encode()
    assert s.psk_for(parse_id("@west"), parse_id("@north")) is None


def test_address_record_is_not_used_for_fqdn_ids() -> None:
    """leftid=@west rightid=@east: a record indexed by the two host addresses is no
    PSK for this pair (Libreswan: "no PSK found"), whatever the addresses are."""
    s = _store(f'192.0.2.1 192.0.2.2 : PSK "{KEY}-ad"\n')
    assert s.psk_for(parse_id("@west"), parse_id("@east"), WEST, EAST) is None
    # nor when only one side has an FQDN ID
    assert s.psk_for(parse_id("@west"), None, WEST, EAST) is None


def test_address_record_is_used_when_the_ids_are_the_addresses() -> None:
    """Unset leftid=/rightid=: the IDs are the host addresses, so the record matches."""
    s = _store(f'192.0.2.1 192.0.2.2 : PSK "{KEY}-ad"\n'
               f'"2001:db8::1" "2001:db8::2" : PSK "{KEY}-v6"\n')
    assert s.psk_for(None, parse_id("192.0.2.2"), WEST, EAST) == f"{KEY}-ad".encode()
    assert s.psk_for(parse_id("192.0.2.2"), parse_id("192.0.2.1")) == f"{KEY}-ad".encode()
    assert s.psk_for(None, parse_id("2001:db8::1"), ip("2001:db8::2"), None) \
        == f"{KEY}-v6".encode()


@pytest.mark.parametrize("text", [': PSK "{k}"\n', '%any : PSK "{k}"\n',
                                  '%any %any : PSK "{k}"\n', '0.0.0.0 %any : PSK "{k}"\n',
                                  '%any6 : PSK "{k}"\n'])
def test_wildcard_records_match_any_pair(text: str) -> None:
    s = _store(text.format(k=KEY))
    assert s.psk_for(parse_id("@west"), parse_id("@east")) == KEY.encode()
    assert s.psk_for(parse_id("@a"), None, WEST) == KEY.encode()  # %ANYADDR peer


def test_roadwarrior_peer_is_anyaddr() -> None:
    """keys.c lsw_get_secret: a template (right=%any) whose rightid= is unset looks up
    the peer as %ANYADDR, so only a wildcard index names the peer; an address-indexed
    record of some peer is not picked."""
    s = _store(f'@east 192.0.2.9 : PSK "{KEY}-one-peer"\n'
               f'@east %any : PSK "{KEY}-rw"\n')
    assert s.psk_for(parse_id("@east"), None, EAST) == f"{KEY}-rw".encode()
    only_peer = _store(f'@east 192.0.2.9 : PSK "{KEY}-one-peer"\n')
    assert only_peer.psk_for(parse_id("@east"), None, EAST) is None
    # IPv6 host: %ANYADDR is "::", matched by a "::" or %any6 index
    v6 = _store(f'@east "::" : PSK "{KEY}-v6"\n')
    assert v6.psk_for(parse_id("@east"), None, ip("2001:db8::2")) == f"{KEY}-v6".encode()


def test_only_our_id_as_single_index_matches_any_peer() -> None:
    """secrets.c: a record whose only index is our ID also matches "default peer"
    (score local|default); with other non-matching IDs it is no PSK."""
    s = _store(f'@east : PSK "{KEY}-me"\n')
    assert s.psk_for(parse_id("@east"), parse_id("@north")) == f"{KEY}-me".encode()
    assert s.psk_for(parse_id("@east"), None, EAST) == f"{KEY}-me".encode()
    two = _store(f'@east @x : PSK "{KEY}-x"\n')
    assert two.psk_for(parse_id("@east"), parse_id("@north")) is None


def test_only_the_peers_id_is_no_psk() -> None:
    """secrets.c: a match of the remote ID alone is not an accepted score."""
    s = _store(f'@west : PSK "{KEY}-peer"\n')
    assert s.psk_for(parse_id("@east"), parse_id("@west")) is None


def test_one_index_naming_both_ends() -> None:
    """same_id is checked against both IDs: an index equal to both counts for both."""
    s = _store(f'@same @other : PSK "{KEY}-both"\n: PSK "{KEY}-d"\n')
    assert s.psk_for(parse_id("@same"), parse_id("@same")) == f"{KEY}-both".encode()


# most specific first, as the scores of lsw_find_secret_by_id order them
RANKED = [
    ("@east @west", "both"),          # local|remote
    ("@east %any", "me-any"),         # local|any
    ("@east", "me"),                  # local|default
    ("@west %any", "him-any"),        # remote|any
    ("%any", "any"),                  # any
]


@pytest.mark.parametrize("drop", range(len(RANKED)))
def test_more_specific_record_wins(drop: int) -> None:
    """Each record beats every less specific one, whatever the file order."""
    kept = RANKED[drop:]
    for order in (kept, list(reversed(kept))):
        text = "".join(f'{idx} : PSK "{KEY}-{tag}"\n' for idx, tag in order)
        s = _store(text)
        assert s.psk_for(parse_id("@east"), parse_id("@west")) == \
            f"{KEY}-{kept[0][1]}".encode(), text


def test_equal_scores_the_first_record_wins() -> None:
    """Libreswan keeps its list in reverse and replaces the best on an equal score:
    the first record in the file wins; a record with no index ties with %any."""
    s = _store(f': PSK "{KEY}-1"\n%any : PSK "{KEY}-2"\n')
    assert s.psk_for(parse_id("@a"), parse_id("@b")) == f"{KEY}-1".encode()
    s = _store(f'%any : PSK "{KEY}-2"\n: PSK "{KEY}-1"\n')
    assert s.psk_for(parse_id("@a"), parse_id("@b")) == f"{KEY}-2".encode()


# ------------------------------------------------------------------ engine level

def _secrets(net: Net, west: str, east: str) -> None:
    net.west.engine.secrets = _store(west)  # type: ignore[assignment]
    net.east.engine.secrets = _store(east)  # type: ignore[assignment]


ADDR_SECRETS = f'192.0.2.1 192.0.2.2 : PSK "{KEY}-addr"\n'
ID_SECRETS = f'@west.example @east.example : PSK "{KEY}-ids"\n'


def test_initiator_with_fqdn_ids_and_address_secret_fails_cleanly() -> None:
    net = Net()
    _secrets(net, ADDR_SECRETS, ADDR_SECRETS)
    net.up()
    assert not net.established(net.west) and not net.established(net.east)
    logs = net.west.logs()
    assert any("no PSK found" in m and "'@west.example'" in m and "'@east.example'" in m
               for m in logs), logs
    assert not any(KEY in m for m in logs + net.east.logs())


def test_responder_with_fqdn_ids_and_address_secret_refuses() -> None:
    net = Net()  # east's address-indexed record even holds the right key
    _secrets(net, ID_SECRETS, ADDR_SECRETS.replace("-addr", "-ids"))
    net.up()
    assert not net.established(net.east) and not net.established(net.west)
    logs = net.east.logs()
    assert any("no PSK for" in m and "@west.example" in m for m in logs), logs


def test_address_secret_with_unset_ids_establishes() -> None:
    net = Net(west_kw={"leftid": None, "rightid": None},
              east_kw={"leftid": None, "rightid": None})
    _secrets(net, ADDR_SECRETS, ADDR_SECRETS)
    net.up()
    assert net.established(net.west) and net.established(net.east)


def test_fqdn_ids_establish() -> None:
    net = Net()
    _secrets(net, ID_SECRETS + ADDR_SECRETS.replace("addr", "other"), ID_SECRETS)
    net.up()
    assert net.established(net.west) and net.established(net.east)


def test_roadwarrior_gateway_with_any_record() -> None:
    """A right=%any gateway: ``@east.example %any`` authenticates a road warrior whose
    ID is its address (testing/pluto/ikev2-63-anyid-nat)."""
    net = Net(west_kw={"leftid": None},
              east_kw={"leftid": None, "left": "%any"})
    _secrets(net, f'@east.example %any : PSK "{KEY}-rw"\n',
             f'@east.example %any : PSK "{KEY}-rw"\n')
    net.up()
    assert net.established(net.west) and net.established(net.east)


def test_rightid_any_with_a_known_host_looks_up_the_address() -> None:
    """rightid=%any with right=ADDR: the peer's ID is its address (identity.remote_pattern),
    so the initiator looks its PSK up by that address, not by a wildcard that would
    match the first record naming us (here the wrong key)."""
    net = Net(west_kw={"rightid": "%any"}, east_kw={"rightid": None})
    _secrets(net, f'@west.example @other : PSK "{KEY}-wrong"\n'
                  f'@west.example 192.0.2.2 : PSK "{KEY}-good"\n',
             f'192.0.2.2 @west.example : PSK "{KEY}-good"\n')
    net.up()
    assert net.established(net.west) and net.established(net.east), net.east.logs()
