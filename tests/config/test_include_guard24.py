"""ipsec.conf and its includes are read by pluto itself (``ipsec add``, start): a path
that is not a regular file (a FIFO nobody writes to, ``/dev/zero``) used to block the
parser or fill memory, and a file of any size was read whole.  Now refused with
``file:line:`` (Libreswan's parser words an include it cannot read "cannot open include
filename: 'X'"), and a file over ``MAX_FILE_BYTES`` with ``file: ... too large``."""

from __future__ import annotations

import contextlib
import os
import pathlib
import threading
from collections.abc import Callable

import pytest

from pypluto.config import parser
from pypluto.config.parser import ConfigFile, load_config

CONN = "conn c\n\tleft=192.0.2.1\n\tright=192.0.2.2\n\tauthby=secret\n\tauto=add\n"


def _load_guarded(path: pathlib.Path, release: pathlib.Path | None = None) -> ConfigFile:
    """``load_config(path)`` in a thread; the join timeout only guards the test run (a
    parser blocked on a FIFO fails the test instead of hanging it), it times nothing."""
    out: list[ConfigFile] = []
    errs: list[BaseException] = []

    def run() -> None:
        try:
            out.append(load_config(str(path)))
        except BaseException as e:  # noqa: BLE001 - re-raised below
            errs.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout=20)
    blocked = t.is_alive()
    if blocked and release is not None:  # let the blocked reader go: EOF on the FIFO
        with contextlib.suppress(OSError):
            os.close(os.open(release, os.O_WRONLY | os.O_NONBLOCK))
        t.join(timeout=20)
    assert not blocked, f"parsing {path} blocked"
    if errs:
        raise errs[0]
    return out[0]


def _msgs(cfg: ConfigFile) -> list[str]:
    return [str(d) for d in cfg.diagnostics]


def test_include_of_a_fifo_is_refused_without_blocking(tmp_path: pathlib.Path) -> None:
    fifo = tmp_path / "fifo.conf"
    os.mkfifo(fifo)
    main = tmp_path / "ipsec.conf"
    main.write_text(CONN + "include fifo.conf\n")
    cfg = _load_guarded(main, release=fifo)
    assert _msgs(cfg) == [f"{main}:6: cannot open include filename: 'fifo.conf' "
                          f"({fifo}: not a regular file (a FIFO))"]
    assert [str(d) for d in cfg.file_errors] == _msgs(cfg)  # an error, not a warning
    assert not cfg.ok


def test_a_glob_matching_a_fifo_refuses_it_and_reads_the_rest(tmp_path: pathlib.Path) -> None:
    (tmp_path / "d").mkdir()
    os.mkfifo(tmp_path / "d" / "b.conf")
    (tmp_path / "d" / "a.conf").write_text(CONN)
    main = tmp_path / "ipsec.conf"
    main.write_text("include d/*.conf\n")
    cfg = _load_guarded(main, release=tmp_path / "d" / "b.conf")
    assert list(cfg.conns) == ["c"]
    assert _msgs(cfg) == [f"{main}:1: cannot open include filename: 'd/*.conf' "
                          f"({tmp_path / 'd' / 'b.conf'}: not a regular file (a FIFO))"]


def test_include_of_dev_zero_is_refused(tmp_path: pathlib.Path) -> None:
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero")
    main = tmp_path / "ipsec.conf"
    main.write_text("include /dev/zero\n" + CONN)
    cfg = _load_guarded(main)
    assert _msgs(cfg) == [f"{main}:1: cannot open include filename: '/dev/zero' "
                          "(/dev/zero: not a regular file (a character device))"]


def test_top_level_fifo_or_device_is_a_diagnostic_not_a_hang(tmp_path: pathlib.Path) -> None:
    fifo = tmp_path / "ipsec.conf"
    os.mkfifo(fifo)
    cfg = _load_guarded(fifo, release=fifo)
    assert _msgs(cfg) == [f"{fifo}: not a regular file (a FIFO)"] and not cfg.ok
    if os.path.exists("/dev/null"):
        cfg = _load_guarded(pathlib.Path("/dev/null"))
        assert _msgs(cfg) == ["/dev/null: not a regular file (a character device)"]


def test_an_included_directory_still_warns_as_before(tmp_path: pathlib.Path) -> None:
    """A directory neither blocks nor fills memory: it keeps its warning (see
    test_cfg_hostile_files.py), the conns after it load."""
    (tmp_path / "d").mkdir()
    main = tmp_path / "ipsec.conf"
    main.write_text("include d\n" + CONN)
    cfg = _load_guarded(main)
    assert list(cfg.conns) == ["c"]
    assert _msgs(cfg) == [f"{main}:1: warning: could not open include filename: 'd' "
                          "(Is a directory)"]


def test_files_over_the_bound_are_refused(tmp_path: pathlib.Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parser, "MAX_FILE_BYTES", 1000)
    inc = tmp_path / "big.conf"
    inc.write_text("# " + "x" * 998 + "\n")  # 1,001 bytes
    main = tmp_path / "ipsec.conf"
    main.write_text("include big.conf\n" + CONN)
    cfg = _load_guarded(main)
    assert _msgs(cfg) == [f"{main}:1: cannot open include filename: 'big.conf' "
                          f"({inc}: file too large: more than 1000 bytes)"]
    assert not cfg.ok
    inc.write_text("# " + "x" * 997 + "\n")  # exactly the bound: read
    cfg = _load_guarded(main)
    assert cfg.ok and list(cfg.conns) == ["c"], _msgs(cfg)
    main.write_text(CONN + "#" * 1000)
    cfg = _load_guarded(main)
    assert _msgs(cfg) == [f"{main}: file too large: more than 1000 bytes"]
    assert not cfg.conns


def test_at_most_bound_plus_one_bytes_are_read(tmp_path: pathlib.Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    big = tmp_path / "ipsec.conf"
    big.write_bytes(b"#" * 5_000_000)
    monkeypatch.setattr(parser, "MAX_FILE_BYTES", 1000)
    got: list[int] = []
    real_read: Callable[[int, int], bytes] = os.read

    def spy(fd: int, n: int) -> bytes:
        b = real_read(fd, n)
        got.append(len(b))
        return b

    monkeypatch.setattr(os, "read", spy)
    cfg = load_config(str(big))
    monkeypatch.undo()
    assert sum(got) == 1001
    assert _msgs(cfg) == [f"{big}: file too large: more than 1000 bytes"]


def test_the_bound_fits_100000_fully_written_conns() -> None:
    """The bound is for a file named by mistake, not for big configs: 100,000 conns of a
    fully written site-to-site conn (three times over) fit."""
    conn = ("conn site-00001\n\tleft=192.0.2.1\n\tleftid=@gw.example.com\n"
            "\tleftsubnet=10.0.0.0/16\n\tleftcert=gw.example.com\n\tright=198.51.100.123\n"
            '\trightid="C=CA, O=Example, CN=site-00001.branch.example.com"\n'
            "\trightsubnet=10.123.45.0/24\n\tike=aes256-sha2_256;dh19\n\tesp=aes256-sha2_256\n"
            "\tikelifetime=8h\n\tsalifetime=1h\n\tdpddelay=30\n\tauthby=rsasig\n\tauto=start\n")
    assert 100_000 * 3 * len(conn) <= parser.MAX_FILE_BYTES


def test_secrets_include_of_a_fifo_is_refused_without_blocking(tmp_path: pathlib.Path) -> None:
    """ipsec.secrets is read by pluto too (start, ``ipsec rereadsecrets``): an ``include``
    of a FIFO there blocked it the same way.  Refused with the file's name; the records
    of the including file are kept."""
    from pypluto.config.secrets import load_secrets

    fifo = tmp_path / "more.secrets"
    os.mkfifo(fifo, 0o600)
    main = tmp_path / "ipsec.secrets"
    main.write_text('@west @east : PSK "not a real secret, a test one"\ninclude more.secrets\n')
    main.chmod(0o600)
    out: list[object] = []
    t = threading.Thread(target=lambda: out.append(load_secrets(str(main))), daemon=True)
    t.start()
    t.join(timeout=20)
    if t.is_alive():  # let the blocked reader go before failing
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        t.join(timeout=20)
        pytest.fail("loading the secrets blocked on the FIFO")
    store = out[0]
    msgs = [str(d) for d in store.diagnostics]  # type: ignore[attr-defined]
    assert msgs == [f"{fifo}: cannot read: not a regular file (a FIFO)"], msgs
    assert len(store.secrets) == 1  # type: ignore[attr-defined]
