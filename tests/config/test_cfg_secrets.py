"""ipsec.secrets: formats, includes, most-specific PSK match, permissions."""

from __future__ import annotations

import os
import pathlib

import pytest

from pypluto.config.ids import parse_id
from pypluto.config.secrets import decode_secret, load_secrets, parse_secrets_text

TEXT = """\
# comment
@east @west : PSK "east-west-key-0123456789"
@west %any : PSK "west-any-key-0123456789"
: PSK "default-key-0123456789"
192.0.2.1 : PSK 0x3031_3233_3435_3637_3839_6162_6364
"2001:db8::1" @west : PSK 0sc2VjcmV0LXNlY3JldC1zZWNyZXQ=
@east @road : PSK 0tplain-text-secret-xx
@alice : XAUTH "alice-pw"
@east @west : PPKS "ppk-id-1" "ppk-secret-value-long"
: RSA {
\tModulus: 0x00
\t}
"""


@pytest.fixture
def store():  # type: ignore[no-untyped-def]
    s = parse_secrets_text(TEXT, "ipsec.secrets")
    assert s.ok, [str(d) for d in s.diagnostics]
    return s


def test_formats(store) -> None:  # type: ignore[no-untyped-def]
    assert decode_secret('"abc"') == b"abc"
    assert decode_secret("0x0a_0b") == b"\n\x0b"
    assert decode_secret("0sAAE=") == b"\x00\x01"
    assert decode_secret("0tfoo") == b"foo"
    with pytest.raises(ValueError):
        decode_secret("bare")
    assert sum(1 for s in store.secrets if s.kind == "PSK") == 6
    assert any("RSA secret ignored" in d.message for d in store.diagnostics)


def test_most_specific_match(store) -> None:  # type: ignore[no-untyped-def]
    east, west, road, north = (parse_id(x) for x in ("@east", "@west", "@road", "@north"))
    assert store.psk_for(east, west) == b"east-west-key-0123456789"
    assert store.psk_for(west, east) == b"east-west-key-0123456789"
    # west talking to anyone: "@west %any" beats the default
    assert store.psk_for(west, north) == b"west-any-key-0123456789"
    # Libreswan's rule: a %any index is a wildcard match whatever the other index
    # says; a record without indices is a wildcard too (two ID_NONE indices in
    # Libreswan 5.2 lib/libswan/secrets.c add_secret): equal scores, the first wins
    assert store.psk_for(east, north) == b"west-any-key-0123456789"
    # a record naming only our own ID is not a PSK for this peer
    only_me = parse_secrets_text('@east @x : PSK "0123456789abcdef-1"\n'
                                 ': PSK "0123456789abcdef-d"\n')
    assert only_me.psk_for(east, north) == b"0123456789abcdef-d"
    assert store.psk_for(road, east) == b"plain-text-secret-xx"
    # Libreswan 5.2 looks up IDs only (no fallback to addresses, tests/config/
    # test_psk_lookup24.py): an unset leftid= is our address, and a record whose only
    # index is our ID matches any peer; a record naming only the peer matches nothing
    ip = __import__("ipaddress").ip_address
    assert store.psk_for(None, None, ip("192.0.2.1"), None) == b"0123456789abcd"
    key = store.psk_for(None, None, None, ip("192.0.2.1"))
    assert key == b"west-any-key-0123456789"
    assert store.psk_for(parse_id("2001:db8::1"), west) == b"secret-secret-secret"


def test_no_default_means_none() -> None:
    s = parse_secrets_text('@a @b : PSK "0123456789abcdef"\n')
    assert s.psk_for(parse_id("@a"), parse_id("@c")) is None


def test_xauth_ppk_and_listing(store) -> None:  # type: ignore[no-untyped-def]
    assert store.xauth_for("alice") == b"alice-pw"
    assert store.ppk_for(b"ppk-id-1") == b"ppk-secret-value-long"
    listing = "\n".join(store.list_psks())
    assert "@east @west : PSK" in listing
    for sec in store.secrets:
        assert sec.value.decode(errors="replace") not in listing
        assert sec.value.decode(errors="replace") not in repr(sec)
    assert "key" not in repr(store)


def test_errors_name_the_line() -> None:
    s = parse_secrets_text('@a : PSK "x" extra\n@b PSK "y"\n: FOO "z"\n: PSK "short"\n', "s")
    msgs = [str(d) for d in s.diagnostics]
    assert any(m.startswith("s:1:") for m in msgs)
    assert any(m.startswith("s:2:") and "':'" in m for m in msgs)
    assert any(m.startswith("s:3:") and "FOO" in m for m in msgs)
    assert any(m.startswith("s:4:") and "weak" in m for m in msgs)
    assert all("short" not in m for m in msgs)  # the secret itself is never shown


def test_include_and_permissions(tmp_path: pathlib.Path) -> None:
    d = tmp_path / "ipsec.d"
    d.mkdir()
    (d / "a.secrets").write_text('@a @b : PSK "0123456789abcdef-a"\n')
    main = tmp_path / "ipsec.secrets"
    main.write_text("include ipsec.d/*.secrets\n")
    for p in (main, d / "a.secrets"):
        os.chmod(p, 0o600)
    store = load_secrets(str(main))
    assert store.ok and store.psk_for(parse_id("@a"), parse_id("@b")) == b"0123456789abcdef-a"
    os.chmod(d / "a.secrets", 0o644)
    store = load_secrets(str(main))
    assert store.ok and any("readable by others" in x.message for x in store.diagnostics)
    os.chmod(d / "a.secrets", 0o666)
    store = load_secrets(str(main))
    assert not store.ok and store.psk_for(parse_id("@a"), parse_id("@b")) is None
    assert any("others can write" in x.message for x in store.diagnostics)


def test_glob_pattern(tmp_path: pathlib.Path) -> None:
    for n in ("x", "y"):
        p = tmp_path / f"{n}.secrets"
        p.write_text(f'@{n} %any : PSK "0123456789abcdef-{n}"\n')
        os.chmod(p, 0o600)
    store = load_secrets(str(tmp_path / "*.secrets"))
    assert len(store.files) == 2 and len(store.secrets) == 2


def test_self_include_is_bounded(tmp_path: pathlib.Path) -> None:
    for n in range(5):
        p = tmp_path / f"s{n}.secrets"
        p.write_text('include *.secrets\n@a @b : PSK "0123456789abcdef-x"\n')
        os.chmod(p, 0o600)
    store = load_secrets(str(tmp_path / "s0.secrets"))
    assert not store.ok
    assert store.psk_for(parse_id("@a"), parse_id("@b")) == b"0123456789abcdef-x"
