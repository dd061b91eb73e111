"""Red team 26: ipsec.secrets as Libreswan 5.2 reads it (lib/libswan/secrets.c, lex.c,
id.c ``atoid``/``same_id``, x509dn.c ``same_dn``) and uses it (programs/pluto/keys.c).

Facts about Libreswan are restated here, not copied.

Fixed in this round:

- a DN index is compared with ``same_dn``: exactly, RDN by RDN in order.  A ``*`` value
  is no wildcard there (``match_dn``'s wildcards are for ``rightid=``), and the same
  attributes in another order are another DN.  pypluto matched DN indices with the
  ``rightid=`` rules (``*`` wildcards, any order), so a responder picked a PSK that
  Libreswan does not; a ``*`` in a DN index now also draws a warning at load.
- a bare host name index (``east.example``, no ``@``) is resolved to an IPv4 address
  when the file is loaded (ipsec.secrets(5), ``atoid``); pypluto took it as an FQDN ID,
  so it matched ``leftid=@east.example``.  pluto now resolves it; a name that does not
  resolve (or no resolver, the offline parser) refuses the record with file:line.
- ``*`` and ``""`` as an index: ``atoid`` refuses them (no such host); pypluto took them
  as ``%any``.  Refused (an index that does not parse refuses the record, as before).
- ``include`` is a keyword without case (``tokeqword``): ``INCLUDE f`` was "missing ':'".
- a ``0t`` value and a quoted string end on their line (lex.c): ``PSK 0tfoo`` followed by
  an indented line, or a quote closed on the next line, made a secret of both lines;
  Libreswan drops the record ("expected record boundary" / unterminated string).
- ``0x`` and ``0s`` values as strict as ttodata (lib/libswan/ttodata.c): '_' only
  between pairs of hex digits; base64 without non-zero padding bits.
- a secret is the file's bytes (Libreswan reads bytes): bytes that are not UTF-8 were
  turned into U+FFFD, and a form feed or U+2028 inside a quoted secret cut the line.
- a PPK_ID in single quotes (secrets.c takes both quotes) was refused.
- ``@a @b : tiger`` said "unknown secret kind 'tiger'": the forgotten-kind word may be
  the secret; only an upper-case kind-like word is named now.
"""

from __future__ import annotations

import ipaddress
import os
import pathlib

import pytest
from ike.harness import Net  # tests/ is on sys.path (tests/conftest.py)

from pypluto.config.ids import parse_id
from pypluto.config.secrets import load_secrets, parse_secrets_text

ip = ipaddress.ip_address
KEY = "Rt26-a-long-enough-test-key"
DN_WEST = "C=CA, O=Libreswan, CN=west"
DN_STAR = "C=CA, O=Libreswan, CN=*"


def _store(text: str):  # type: ignore[no-untyped-def]
    s = parse_secrets_text(text, "s")
    assert s.ok, [str(d) for d in s.diagnostics]
    return s


def _msgs(store) -> list[str]:  # type: ignore[no-untyped-def]
    return [str(d) for d in store.diagnostics]


# ------------------------------------------------------------------ DN indices


def test_star_in_a_dn_index_is_not_a_wildcard() -> None:
    """same_dn (no wildcards): the index ``CN=*`` is not the peer ``CN=west``; the
    next best record (here ``%any``) is used, and the load warns about the ``*``."""
    s = parse_secrets_text(f'"{DN_STAR}" @east : PSK "{KEY}-star"\n'
                           f'@east %any : PSK "{KEY}-any"\n', "s")
    assert s.ok
    assert any(m.startswith("s:1: warning:") and "not a wildcard" in m for m in _msgs(s))
    assert s.psk_for(parse_id("@east"), parse_id(DN_WEST)) == f"{KEY}-any".encode()
    only = _store(f'"{DN_STAR}" @east : PSK "{KEY}-star"\n')
    assert only.psk_for(parse_id("@east"), parse_id(DN_WEST)) is None
    # an ID written with the same '*' (an initiator's rightid= pattern) is equal to it
    assert only.psk_for(parse_id("@east"), parse_id(DN_STAR)) == f"{KEY}-star".encode()


def test_dn_index_in_another_order_is_another_dn() -> None:
    s = _store(f'"CN=west, O=Libreswan, C=CA" @east : PSK "{KEY}-rev"\n')
    assert s.psk_for(parse_id("@east"), parse_id(DN_WEST)) is None
    # the same DN, values in other case and other spacing: equal (printable strings)
    s = _store(f'"c=ca,o=LIBRESWAN,cn=West" @east : PSK "{KEY}-dn"\n')
    assert s.psk_for(parse_id("@east"), parse_id(DN_WEST)) == f"{KEY}-dn".encode()


def _dn_net(east_secrets: str) -> Net:
    # east expects west's DN exactly: a DN wildcard without a certificate is refused
    # before any PSK is looked up (tests/ike/test_peer_id_rules26.py, 5.2's update_peer_id)
    net = Net(west_kw={"leftid": DN_WEST}, east_kw={"leftid": DN_WEST})
    net.west.engine.secrets = _store(f'"{DN_WEST}" @east.example : PSK "{KEY}"\n')  # type: ignore[assignment]
    net.east.engine.secrets = _store(east_secrets)  # type: ignore[assignment]
    net.up()
    return net


def test_responder_does_not_take_a_star_dn_index_for_the_peer() -> None:
    """East looks its PSK up by the DN west sent, and a ``CN=*`` index is not that DN
    (keys.c looks up the instance's IDs with same_id): no PSK, refused.  With west's
    DN as the index: established."""
    net = _dn_net(f'"{DN_STAR}" @east.example : PSK "{KEY}"\n')
    assert not net.established(net.east) and not net.established(net.west)
    assert any("no PSK for" in m for m in net.east.logs()), net.east.logs()
    assert not any(KEY in m for m in net.east.logs() + net.west.logs())
    net = _dn_net(f'"{DN_WEST}" @east.example : PSK "{KEY}"\n')
    assert net.established(net.east) and net.established(net.west)


# ------------------------------------------------------------------ host names


def test_bare_host_name_index_is_not_an_fqdn_id() -> None:
    """``east.example`` (no ``@``) names a host to resolve, not the ID @east.example;
    the offline parser cannot resolve it and refuses the record, naming the line."""
    s = parse_secrets_text(f'@west @x : PSK "{KEY}-ok"\n'
                           f'east.example @west : PSK "{KEY}-name"\n', "s")
    msgs = _msgs(s)
    assert any(m.startswith("s:2: ") and "'east.example' is a host name" in m
               and "@east.example" in m for m in msgs), msgs
    assert s.psk_for(parse_id("@east.example"), parse_id("@west")) is None
    assert s.psk_for(parse_id("@west"), parse_id("@x")) == f"{KEY}-ok".encode()
    assert not any(KEY in m for m in msgs)


def _file(tmp_path: pathlib.Path, text: str, name: str = "ipsec.secrets") -> pathlib.Path:
    p = tmp_path / name
    p.write_text(text)
    os.chmod(p, 0o600)
    return p


def test_bare_host_name_index_resolves_to_its_ipv4_address(tmp_path: pathlib.Path) -> None:
    asked: list[str] = []

    def resolve(name: str) -> list:  # type: ignore[type-arg]
        asked.append(name)
        if name == "gone.example":
            raise OSError("no such host")
        return [ip("2001:db8::2"), ip("192.0.2.2"), ip("192.0.2.22")]

    p = _file(tmp_path, f'east.example "west.example" : PSK "{KEY}-name"\n'
                        f'gone.example @west : PSK "{KEY}-gone"\n'
                        f'@west @x : PSK "{KEY}-ok"\n'
                        'rsa.example : RSA {\n\t}\n'
                        'bad.example @x : PSK 0xZZ\n')
    s = load_secrets(str(p), resolve)
    # looked up once the record is otherwise good: not for an ignored or a bad record
    assert asked == ["east.example", "west.example", "gone.example"]
    # the first IPv4 address is the index (atoid resolves a name without ':' as IPv4)
    assert s.psk_for(parse_id("192.0.2.2"), parse_id("192.0.2.2")) == f"{KEY}-name".encode()
    assert s.psk_for(parse_id("@east.example"), parse_id("192.0.2.2")) is None
    assert s.psk_for(parse_id("2001:db8::2"), parse_id("192.0.2.2")) is None
    msgs = _msgs(s)
    assert any(m.startswith(f"{p}:2: ") and "'gone.example' does not resolve" in m
               for m in msgs), msgs
    assert s.psk_for(parse_id("@west"), parse_id("@x")) == f"{KEY}-ok".encode()
    assert not any(KEY in m for m in msgs)


def test_pluto_resolves_host_name_indices(tmp_path: pathlib.Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon's loader (start, ``whack --rereadsecrets``) passes its resolver."""
    from pypluto.daemon import secrets as dsecrets
    from pypluto.daemon.logger import PlutoLogger

    monkeypatch.setattr(dsecrets, "resolve_host",
                        lambda name: [ip("2001:db8::7"), ip("192.0.2.7")])
    p = _file(tmp_path, f'peer.example @east : PSK "{KEY}-rw"\n')
    proxy = dsecrets.SecretsProxy()
    log = PlutoLogger(logfile=str(tmp_path / "log"), logtime=False)
    assert proxy.load(str(p), log) == 1
    assert proxy.psk_for(parse_id("@east"), parse_id("192.0.2.7"), None, None) \
        == f"{KEY}-rw".encode()
    # --rereadsecrets replaces the secrets, it does not merge them
    p.write_text(f'@east @north : PSK "{KEY}-new"\n')
    proxy.load(str(p), log)
    assert proxy.psk_for(parse_id("@east"), parse_id("192.0.2.7"), None, None) is None
    assert proxy.psk_for(parse_id("@east"), parse_id("@north"), None, None) \
        == f"{KEY}-new".encode()
    log.close()
    assert KEY not in (tmp_path / "log").read_text()


@pytest.mark.parametrize("index", ["*", '""', '" "'])
def test_star_and_empty_indices_are_refused(index: str) -> None:
    """atoid looks ``*`` and an empty string up as host names and fails; pypluto took
    them as ``%any`` (a PSK for every peer)."""
    s = parse_secrets_text(f'@east {index} : PSK "{KEY}"\n', "s")
    assert not s.secrets
    assert any(m.startswith("s:1: bad index") for m in _msgs(s)), _msgs(s)
    assert s.psk_for(parse_id("@east"), parse_id("@anyone")) is None


# ------------------------------------------------------------------ syntax


def test_include_keyword_in_any_case(tmp_path: pathlib.Path) -> None:
    _file(tmp_path, f'@a @b : PSK "{KEY}-inc"\n', "more.secrets")
    p = _file(tmp_path, "INCLUDE more.secrets\nInclude more.secrets\n")
    s = load_secrets(str(p))
    assert s.ok, _msgs(s)
    assert len(s.secrets) == 2
    assert s.psk_for(parse_id("@a"), parse_id("@b")) == f"{KEY}-inc".encode()


def test_0t_value_ends_on_its_line() -> None:
    """lex.c: a 0t token is the rest of its line; an indented next line is one more
    token, so the record is dropped (never a secret of both lines)."""
    s = parse_secrets_text(f"@a @b : PSK 0t{KEY} one\n\tmore words\n"
                           f"@c @d :\n\tPSK 0t{KEY} two\n", "s")
    assert any(m.startswith("s:1: ") and "exactly one value" in m for m in _msgs(s))
    assert s.psk_for(parse_id("@a"), parse_id("@b")) is None
    assert s.psk_for(parse_id("@c"), parse_id("@d")) == f"{KEY} two".encode()
    assert not any(KEY in m for m in _msgs(s))


def test_quoted_secret_does_not_run_onto_the_next_line() -> None:
    s = parse_secrets_text(f'@a @b : PSK "{KEY}\n\tstill"\n@c @d : PSK "{KEY}"\n', "s")
    assert any(m.startswith("s:1: unterminated quoted string") for m in _msgs(s))
    assert s.psk_for(parse_id("@a"), parse_id("@b")) is None
    assert s.psk_for(parse_id("@c"), parse_id("@d")) == KEY.encode()
    assert not any(KEY in m for m in _msgs(s))


@pytest.mark.parametrize("value", ["0x4_1424344454647484950515253", "0x_4142434445464748495051",
                                   "0x41424344454647484950515253_", "0x4142__434445464748495051",
                                   "0sQUJDREVGR0hJSktMTU5PUR==", "0sQUJDREVGR0hJSktMTU5PUFR="])
def test_hex_and_base64_as_strict_as_ttodata(value: str) -> None:
    """ttodata: hex is pairs of digits with at most one '_' between pairs (not inside a
    pair, not leading or trailing, not doubled); base64 with non-zero padding bits is
    bad.  pypluto dropped every '_' and took any padding bits, so it loaded a key that
    Libreswan refuses."""
    s = parse_secrets_text(f"@a @b : PSK {value}\n@c @d : PSK 0x4142434445464748_49505152\n",
                           "s")
    assert any(m.startswith("s:1: bad ") for m in _msgs(s)), _msgs(s)
    assert s.psk_for(parse_id("@a"), parse_id("@b")) is None
    assert s.psk_for(parse_id("@c"), parse_id("@d")) == b"ABCDEFGHIPQR"


def test_a_lower_case_word_after_the_colon_is_not_echoed() -> None:
    """``@a @b : tiger`` (kind and quotes forgotten): the word may be the secret, so
    the message does not repeat it; an upper-case kind-like word (``FOO``) still is."""
    s = parse_secrets_text("@a @b : tiger\n@a @b : FOO 0x41\n", "s")
    msgs = _msgs(s)
    assert any(m.startswith("s:1: unknown secret kind") for m in msgs), msgs
    assert not any("tiger" in m for m in msgs), msgs
    assert any(m.startswith("s:2: unknown secret kind 'FOO'") for m in msgs), msgs


def test_a_secret_is_the_files_bytes(tmp_path: pathlib.Path) -> None:
    """Libreswan reads a secret byte for byte: a Latin-1 PSK is those bytes on both
    peers.  pypluto turned bytes that are not UTF-8 into U+FFFD (another key), and cut
    lines at a form feed or U+2028 inside a quoted secret (str.splitlines)."""
    p = tmp_path / "ipsec.secrets"
    p.write_bytes(b'@a @b : PSK "caf\xe9-0123456789abcdef"\n'
                  b'@c @d : PSK "form\x0cfeed\xe2\x80\xa8line-0123456789"\r\n'
                  b'@e @f : PSK 0tt\xe9xt-0123456789abcdef\n'
                  b'@caf\xe9 @x : PSK "0123456789abcdef-2"\n')
    os.chmod(p, 0o600)
    s = load_secrets(str(p))
    msgs = _msgs(s)
    assert s.psk_for(parse_id("@a"), parse_id("@b")) == b"caf\xe9-0123456789abcdef"
    assert s.psk_for(parse_id("@c"), parse_id("@d")) \
        == b"form\x0cfeed\xe2\x80\xa8line-0123456789"
    assert s.psk_for(parse_id("@e"), parse_id("@f")) == b"t\xe9xt-0123456789abcdef"
    assert any(m.startswith(f"{p}:1: warning: not valid UTF-8") for m in msgs), msgs
    assert any(m.startswith(f"{p}:4: index ") and "not valid UTF-8" in m for m in msgs)
    assert not any("0123456789" in m for m in msgs), msgs
    for m in msgs:
        m.encode("utf-8")  # printable to a log as it is


def test_ppk_id_in_single_quotes() -> None:
    """secrets.c takes a PPK_ID in '...' as in "..."."""
    s = _store(f"@a @b : PPKS 'ppk-one' \"{KEY}-{KEY}\"\n")
    assert s.ppk_for(b"ppk-one") == f"{KEY}-{KEY}".encode()


# ------------------------------------------------------------------ already right


def test_ids_on_one_line_share_the_psk_between_every_pair() -> None:
    s = _store(f'@a @b @c "192.0.2.9" : PSK "{KEY}-group"\n')
    names = ["@a", "@b", "@c", "192.0.2.9"]
    for x in names:
        for y in names:
            if x != y:
                assert s.psk_for(parse_id(x), parse_id(y)) == f"{KEY}-group".encode()
    assert s.psk_for(parse_id("@a"), parse_id("@z")) is None


def test_both_ids_and_a_wildcard_is_no_accepted_score() -> None:
    """lsw_find_secret_by_id accepts no score with ours, the peer's and the any bit
    together: ``@east @west %any`` is no PSK for east/west, a weaker record is."""
    s = _store(f'@east @west %any : PSK "{KEY}-three"\n: PSK "{KEY}-default"\n')
    assert s.psk_for(parse_id("@east"), parse_id("@west")) == f"{KEY}-default".encode()
    # for any other peer the record is ours and a wildcard
    assert s.psk_for(parse_id("@east"), parse_id("@north")) == f"{KEY}-three".encode()


def test_id_forms_compare_as_id_eq() -> None:
    s = _store(f'@East.Example. user@Example.ORG : PSK "{KEY}-fq"\n'
               f'%null @n : PSK "{KEY}-null"\n'
               f'@[group] @g : PSK "{KEY}-kid"\n')
    assert s.psk_for(parse_id("@east.example"), parse_id("user@example.org")) \
        == f"{KEY}-fq".encode()
    assert s.psk_for(parse_id("@east.example"), parse_id("@user@example.org")) \
        == f"{KEY}-fq".encode()  # @user@fqdn is the same RFC822 ID
    # an FQDN ID is not a user@fqdn of the same text
    assert s.psk_for(parse_id("@east.example"), parse_id("@example.org")) is None
    assert s.psk_for(parse_id("@n"), parse_id("%null")) == f"{KEY}-null".encode()
    assert s.psk_for(parse_id("@g"), parse_id("@[group]")) == f"{KEY}-kid".encode()
    assert s.psk_for(parse_id("@g"), parse_id("@group")) is None
    # %none is ID_NONE: a wildcard (ours and any)
    s = _store(f'%none @w : PSK "{KEY}-none"\n')
    assert s.psk_for(parse_id("@w"), parse_id("@q")) == f"{KEY}-none".encode()


def test_bad_lines_lose_nothing_else_and_echo_no_secret(tmp_path: pathlib.Path) -> None:
    p = _file(tmp_path, "\tindented first line\n"
                        f"@a @b : PSK\n"
                        f"@a @b : FOO \"{KEY}-x\"\n"
                        f"@a @b : PSK 0x{KEY}\n"
                        "include\n"
                        "include nothing-here-*.secrets\n"
                        f"@a @b : PSK \"{KEY}-good\"\n")
    s = load_secrets(str(p))
    msgs = _msgs(s)
    for line in (1, 2, 3, 4, 5, 6):
        assert any(m.startswith(f"{p}:{line}: ") for m in msgs), (line, msgs)
    assert s.psk_for(parse_id("@a"), parse_id("@b")) == f"{KEY}-good".encode()
    assert not any(KEY in m for m in msgs), msgs
