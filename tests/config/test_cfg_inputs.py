"""ConfigFile.inputs and inputs_signature(): when may a parse be reused?"""

from __future__ import annotations

import os
import pathlib

from pypluto.config.parser import inputs_signature, load_config

MAIN = """\
config setup
\tuniqueids=yes

include {dir}/conns/*.conf
"""
CONN = """\
conn {name}
\tleft=192.0.2.1
\tright=192.0.2.2
\tauthby=secret
\tauto=add
"""


def _tree(tmp: pathlib.Path) -> pathlib.Path:
    (tmp / "conns").mkdir()
    (tmp / "conns" / "a.conf").write_text(CONN.format(name="a"))
    main = tmp / "ipsec.conf"
    main.write_text(MAIN.format(dir=tmp))
    return main


def test_inputs_list_every_file_and_glob(tmp_path: pathlib.Path) -> None:
    main = _tree(tmp_path)
    cfg = load_config(str(main))
    assert list(cfg.conns) == ["a"]
    assert cfg.inputs == [("file", str(main)), ("glob", f"{tmp_path}/conns/*.conf"),
                          ("file", f"{tmp_path}/conns/a.conf")]


def test_signature_is_stable_until_something_changes(tmp_path: pathlib.Path) -> None:
    main = _tree(tmp_path)
    cfg = load_config(str(main))
    sig = inputs_signature(cfg)
    assert inputs_signature(cfg) == sig  # nothing changed

    # a new file matched by the include glob
    (tmp_path / "conns" / "b.conf").write_text(CONN.format(name="b"))
    sig2 = inputs_signature(cfg)
    assert sig2 != sig
    assert list(load_config(str(main)).conns) == ["a", "b"]

    # an edited included file (same size, later mtime)
    a = tmp_path / "conns" / "a.conf"
    a.write_text(CONN.format(name="z"))
    st = os.stat(a)
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert inputs_signature(cfg) != sig2

    # a removed top file
    main.unlink()
    assert inputs_signature(cfg)[0] == (str(main), None)
