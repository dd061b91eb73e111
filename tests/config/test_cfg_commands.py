"""ipsec addconn / readwriteconf as functions (Libreswan's command behaviour)."""

from __future__ import annotations

import io
import pathlib

from pypluto.config.commands import addconn_main, readwriteconf_main
from pypluto.config.parser import parse_config_text

CONF = """\
config setup
\tuniqueids=yes
\tprotostack=netkey

conn %default
\tauthby=secret

conn a
\tleft=192.0.2.1
\tright=192.0.2.2
\tauto=add

conn b
\talso=a
\trightid=@b
\tauto=start

conn c
\talso=a
\tauto=add

conn d
\talso=a
\tauto=ignore
"""


def _run(fn, argv):  # type: ignore[no-untyped-def]
    out, err = io.StringIO(), io.StringIO()
    rc = fn(argv, out=out, err=err)
    return rc, out.getvalue(), err.getvalue()


def _write(tmp_path: pathlib.Path, text: str) -> str:
    p = tmp_path / "ipsec.conf"
    p.write_text(text)
    return str(p)


def test_checkconfig_ok_and_lists(tmp_path: pathlib.Path) -> None:
    f = _write(tmp_path, CONF)
    assert _run(addconn_main, ["--config", f, "--checkconfig"])[0] == 0
    assert _run(addconn_main, ["--config", f, "--listall"])[1].split() == ["a", "b", "c", "d"]
    assert _run(addconn_main, ["--config", f, "--listadd"])[1].split() == ["a", "c"]
    assert _run(addconn_main, ["--config", f, "--liststart"])[1].split() == ["b"]
    assert _run(addconn_main, ["--config", f, "--listroute"])[1].split() == []
    assert _run(addconn_main, ["--config", f, "--listignore"])[1].split() == ["d"]
    assert _run(addconn_main, ["--config", f, "--liststack"])[1].strip() == "netkey"
    rc, out, _ = _run(addconn_main, ["--config", f, "--autoall"])
    assert rc == 0 and out.splitlines() == ["add a", "up b", "add c"]
    rc, out, _ = _run(addconn_main, ["--config", f, "--configsetup"])
    assert "export uniqueids='yes'" in out


def test_checkconfig_errors_name_file_and_line(tmp_path: pathlib.Path) -> None:
    f = _write(tmp_path, CONF + "\tnosuchkey=1\n\tauto=bogus\n")
    rc, _out, err = _run(addconn_main, ["--config", f, "--checkconfig"])
    assert rc == 1
    lines = err.splitlines()
    assert f"{f}:25: unrecognized keyword 'nosuchkey'" in lines  # Libreswan 5.2's words
    assert any(line.startswith(f"{f}:26: ") and "auto" in line for line in lines)


def test_checkconfig_fails_on_a_key_pypluto_does_not_support(tmp_path: pathlib.Path) -> None:
    """Libreswan would load conn c; pypluto refuses it, names file:line, and
    --checkconfig exits 1 (issue 12); the other conns still load."""
    f = _write(tmp_path, CONF.replace("\tauto=add\n\nconn d", "\tcompress=yes\n\nconn d"))
    rc, _out, err = _run(addconn_main, ["--config", f, "--checkconfig"])
    assert rc == 1
    assert f"{f}:20: compress=yes is not supported by pypluto (IPComp (RFC 3173) not " \
        "implemented by pypluto) (conn 'c' is not loaded)" in err.splitlines(), err
    assert _run(addconn_main, ["--config", f, "--listadd"])[1].split() == ["a"]
    rc, out, _ = _run(addconn_main, ["--config", f, "--autoall"])
    assert rc == 0 and out.splitlines() == ["add a", "up b"]


def test_unreadable_file(tmp_path: pathlib.Path) -> None:
    rc, _o, err = _run(addconn_main, ["--config", str(tmp_path / "none"), "--checkconfig"])
    assert rc == 3 and "cannot load config" in err
    assert _run(readwriteconf_main, ["--config", str(tmp_path / "none")])[0] == 3
    assert _run(addconn_main, ["--bogus-option"])[0] == 1


def test_readwriteconf_round_trips(tmp_path: pathlib.Path) -> None:
    f = _write(tmp_path, CONF)
    rc, out, _ = _run(readwriteconf_main, ["--config", f])
    assert rc == 0
    assert "conn b\n\t#also = a\n\tleft=192.0.2.1\n" in out
    assert '\trightid="@b"\n' in out
    again = parse_config_text(out, "dump.conf")
    assert again.ok and list(again.conns) == ["a", "b", "c", "d"]
    orig = parse_config_text(CONF, "x")
    for name, conn in orig.conns.items():
        c2 = again.conns[name]
        assert (c2.left.host, c2.right.host, str(c2.right.id), c2.authby, c2.auto) == \
            (conn.left.host, conn.right.host, str(conn.right.id), conn.authby, conn.auto)
