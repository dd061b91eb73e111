"""Red-team pass on ipsec.conf and ipsec.secrets as files: broken or hostile content
gives ``file:line: what is wrong`` and refuses only what is broken; nothing raises,
hangs, or shows a secret.  (Random text is in test_cfg_fuzz.py.)"""

from __future__ import annotations

import os
import pathlib

import pytest

from pypluto.config.ids import parse_id
from pypluto.config.parser import load_config
from pypluto.config.secrets import load_secrets

CONN = "conn c\n\tleft=192.0.2.1\n\tright=192.0.2.2\n\tauthby=secret\n\tauto=add\n"
OTHER = "conn ok\n\tleft=192.0.2.1\n\tright=192.0.2.3\n\tauthby=secret\n\tauto=add\n"
SECRET = "Zq8-very-secret-PSK-value-41"


def _conf(tmp_path: pathlib.Path, files: dict[str, str | bytes | None]) -> pathlib.Path:
    for name, data in files.items():
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if data is None:
            p.mkdir(exist_ok=True)
        else:
            p.write_bytes(data if isinstance(data, bytes) else data.encode())
    return tmp_path / "ipsec.conf"


def _msgs(diags: list) -> list[str]:  # type: ignore[type-arg]
    return [str(d) for d in diags]


# ----------------------------------------------------------------- ipsec.conf: fixed


def test_include_naming_a_directory_is_not_silently_ignored(tmp_path: pathlib.Path) -> None:
    main = _conf(tmp_path, {"ipsec.conf": "include conns.d\n" + CONN, "conns.d": None,
                            "conns.d/x.conf": OTHER})
    cfg = load_config(str(main))
    assert list(cfg.conns) == ["c"]
    assert f"{main}:1: warning: could not open include filename: 'conns.d' " \
        "(Is a directory)" in _msgs(cfg.diagnostics)
    # a glob that also matches a directory reads the files and skips it quietly
    main.write_text("include conns.d/*\n" + CONN)
    (tmp_path / "conns.d" / "sub").mkdir()
    cfg = load_config(str(main))
    assert sorted(cfg.conns) == ["c", "ok"] and cfg.diagnostics == []


def test_non_utf8_bytes_are_named_not_silently_replaced(tmp_path: pathlib.Path) -> None:
    main = _conf(tmp_path, {"ipsec.conf": CONN.encode() + b"\tleftid=@caf\xe9\n",
                            "inc.conf": b"# \xff\xfe\n" + OTHER.encode()})
    with main.open("ab") as fh:
        fh.write(b"include inc.conf\n")
    cfg = load_config(str(main))
    assert sorted(cfg.conns) == ["c", "ok"]  # a warning: Libreswan reads bytes too
    msgs = _msgs(cfg.diagnostics)
    assert any(m.startswith(f"{main}:6: warning: not valid UTF-8") for m in msgs), msgs
    assert any(m.startswith(f"{tmp_path / 'inc.conf'}:1: warning: not valid UTF-8")
               for m in msgs), msgs


# ----------------------------------------------------------------- ipsec.conf: already right


def test_include_loops_are_bounded_and_named(tmp_path: pathlib.Path) -> None:
    for files in ({"ipsec.conf": "include ipsec.conf\n" + CONN},
                  {"ipsec.conf": "include b.conf\n" + CONN, "b.conf": "include ipsec.conf\n"},
                  {"ipsec.conf": "include *.conf\n" + CONN, **{f"{i}.conf": "include *.conf\n"
                                                              for i in range(4)}}):
        cfg = load_config(str(_conf(tmp_path, files)))
        assert "c" in cfg.conns
        assert any("nested too deep" in m or "files included in total" in m
                   for m in _msgs(cfg.errors))
        for f in tmp_path.iterdir():
            f.unlink()


@pytest.mark.parametrize(("extra", "where", "what"), [
    (b"\tleftid=@a\x00b\n", 6, "NUL byte"),
    (b"\tikelifetime=99999999999999999999h\n", 6, "too large"),
    (b"\tikelifetime=-1h\n", 6, "invalid duration"),
    (b"\tikelifetime=1e9\n", 6, "invalid duration"),
    (b"\tikelifetime=nan\n", 6, "invalid duration"),
    (b"\treplay-window=99999999999999999999\n", 6, "larger than"),
    (b"\trekeyfuzz=-5%\n", 6, "invalid percentage"),
    (b"\tleft=192.0.2.4\n", 6, "duplicate key 'left'"),
    (b"\tleftsubnet=10.0.0.0/33\n", 6, "is not a subnet"),
    (b"\tleftid=\"open\n", 6, "unterminated"),
])
def test_broken_key_refuses_that_conn_only(tmp_path: pathlib.Path, extra: bytes, where: int,
                                           what: str) -> None:
    main = _conf(tmp_path, {"ipsec.conf": CONN.encode() + extra + OTHER.encode()})
    cfg = load_config(str(main))
    assert "ok" in cfg.conns
    hits = [m for m in _msgs(cfg.errors) if what in m]
    assert hits and all(m.startswith(f"{main}:{where}: ") for m in hits), _msgs(cfg.errors)


def test_huge_line_crlf_and_mixed_indent(tmp_path: pathlib.Path) -> None:
    conn = CONN.replace("\n", "\r\n").replace("\tright", "  right")
    main = _conf(tmp_path, {"ipsec.conf": "# " + "x" * 10_000_000 + "\r\n" + conn})
    cfg = load_config(str(main))
    assert cfg.conns["c"].right.host == "192.0.2.2" and cfg.errors == []
    # a 10 MB leftid= is read whole, then refused: no ID payload can carry it
    main = _conf(tmp_path, {"ipsec.conf": conn + "\tleftid=@" + "a" * 10_000_000 + "\r\n"})
    cfg = load_config(str(main))
    assert "c" not in cfg.conns
    assert any(m.startswith(f"{main}:") and "too long for an ID payload" in m
               for m in _msgs(cfg.errors))


def test_also_cycles_and_deep_chains(tmp_path: pathlib.Path) -> None:
    cyc = CONN + "\talso=a\nconn a\n\talso=b\nconn b\n\talso=a\n" + OTHER
    deep = CONN + "\talso=a0\n" + "".join(f"conn a{i}\n\talso=a{i + 1}\n" for i in range(100)) \
        + "conn a100\n\tikelifetime=1h\n" + OTHER
    # a loop is no error: each section is inserted once (ipsec.conf(5), Libreswan 5.2;
    # tests/config/test_cfg_redteam25.py)
    cfg = load_config(str(_conf(tmp_path, {"ipsec.conf": cyc})))
    assert {"c", "ok"} <= set(cfg.conns) and not cfg.errors
    for text, what in ((deep, "nested too deep"),):
        main = _conf(tmp_path, {"ipsec.conf": text})
        cfg = load_config(str(main))
        assert "c" not in cfg.conns and "ok" in cfg.conns
        assert any(m.startswith(f"{main}:") and "while loading 'c'" in m and what in m
                   for m in _msgs(cfg.errors))


# ----------------------------------------------------------------- ipsec.secrets


def _secrets(tmp_path: pathlib.Path, text: str | bytes, name: str = "ipsec.secrets"
             ) -> pathlib.Path:
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    os.chmod(p, 0o600)
    return p


@pytest.mark.parametrize("record", [
    f"@a @b : {SECRET}",  # PSK keyword forgotten, secret unquoted
    f"@a @b : 0s{SECRET}",
    f"@a @b : 0x{SECRET}",
])
def test_forgotten_kind_does_not_echo_the_secret(tmp_path: pathlib.Path, record: str) -> None:
    p = _secrets(tmp_path, record + "\n")
    store = load_secrets(str(p))
    msgs = _msgs(store.diagnostics)
    assert any(m.startswith(f"{p}:1: unknown secret kind") for m in msgs), msgs
    assert not any(SECRET in m for m in msgs), msgs
    assert store.secrets == []


def test_single_quoted_old_style_psk_is_a_psk(tmp_path: pathlib.Path) -> None:
    """``: 'secret'`` is an old-style PSK as ``: "secret"`` is (the value reader takes both
    quotes); it was refused with the secret in the message."""
    p = _secrets(tmp_path, f"@a @b : '{SECRET}'\n")
    store = load_secrets(str(p))
    assert store.ok, _msgs(store.diagnostics)
    assert store.psk_for(parse_id("@a"), parse_id("@b")) == SECRET.encode()


def test_non_utf8_secret_is_named(tmp_path: pathlib.Path) -> None:
    p = _secrets(tmp_path, b'@a @b : PSK "caf\xe9-0123456789abcdef"\n')
    store = load_secrets(str(p))
    msgs = _msgs(store.diagnostics)
    assert any(m.startswith(f"{p}:1: warning: not valid UTF-8") for m in msgs), msgs
    assert not any("0123456789abcdef" in m for m in msgs)


@pytest.mark.parametrize(("record", "what"), [
    (f'@a @b : PSK "{SECRET}', "unterminated quoted string"),
    ("@a @b : PSK 0x0123456789abcdef0123456789abcdef0", "bad hex value"),
    (f"@a @b : PSK 0s{SECRET}=", "bad base64 value"),
    ("@a @b : PSK 0sQUJDREVGR0hJSktMTU5PUA", "bad base64 value"),
    (f'@a @b PSK "{SECRET}"', "missing ':'"),
    (f'@a @b : PSK "{SECRET}" "{SECRET}"', "exactly one value"),
    (f'@a @b : PPKS "{SECRET}"', "PPKS needs"),
])
def test_bad_secrets_records_name_the_line_never_the_secret(
        tmp_path: pathlib.Path, record: str, what: str) -> None:
    p = _secrets(tmp_path, f"# first\n{record}\n@x @y : PSK \"{SECRET}-ok\"\n")
    store = load_secrets(str(p))
    msgs = _msgs(store.diagnostics)
    assert any(m.startswith(f"{p}:2: ") and what in m for m in msgs), msgs
    assert not any(SECRET in m or "QUJDREVG" in m or "0123456789abcdef" in m for m in msgs)
    assert store.psk_for(parse_id("@x"), parse_id("@y")) == f"{SECRET}-ok".encode()


def test_secrets_edge_records_that_are_fine(tmp_path: pathlib.Path) -> None:
    long = "k" * 100_000
    p = _secrets(tmp_path, f': PSK "{SECRET}#not-a-comment"  # a comment\n'
                 f'@l @m : PSK "{long}"\r\n')
    store = load_secrets(str(p))
    assert store.ok, _msgs(store.diagnostics)
    assert store.psk_for(parse_id("@p"), parse_id("@q")) == f"{SECRET}#not-a-comment".encode()
    assert store.psk_for(parse_id("@l"), parse_id("@m")) == long.encode()


def test_secrets_include_loop_and_directory(tmp_path: pathlib.Path) -> None:
    _secrets(tmp_path, "include b.secrets\n", "a.secrets")
    _secrets(tmp_path, f'include a.secrets\n@a @b : PSK "{SECRET}"\n', "b.secrets")
    (tmp_path / "d").mkdir()
    p = _secrets(tmp_path, "include a.secrets\ninclude d\n")
    store = load_secrets(str(p))
    msgs = _msgs(store.diagnostics)
    assert any("include nested too deep" in m for m in msgs)
    assert any(m.startswith(f"{tmp_path / 'd'}: cannot read: Is a directory") for m in msgs)
    assert store.psk_for(parse_id("@a"), parse_id("@b")) == SECRET.encode()
    assert not any(SECRET in m for m in msgs)


def test_an_id_too_long_for_its_payload_is_refused(tmp_path: pathlib.Path) -> None:
    """RFC 7296 §3.5: an ID payload's length is 16 bits; a longer leftid= cannot be sent,
    so the conn is refused at load with file:line, not at IKE_AUTH."""
    main = _conf(tmp_path, {"ipsec.conf": CONN + "\tleftid=@" + "a" * 70000 + "\n" + OTHER})
    cfg = load_config(str(main))
    assert list(cfg.conns) == ["ok"]
    msgs = _msgs(cfg.diagnostics)
    assert any(m.startswith(f"{main}:") and "too long for an ID payload" in m
               for m in msgs), [m[:200] for m in msgs]
    with pytest.raises(ValueError, match="too long"):
        parse_id("@" + "b" * 65528)
    assert len(parse_id("@" + "b" * 65527).data) == 65527
