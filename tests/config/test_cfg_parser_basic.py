"""ipsec.conf syntax, %default, also=, includes, diagnostics (ipsec.conf(5))."""

from __future__ import annotations

import ipaddress
import pathlib

from pypluto.config.parser import build_connection, load_config, parse_config_text

BASIC = """\
# comment
version 2.0

config setup
\tlogfile=/tmp/pluto.log
\tuniqueids=no
\tplutodebug="all crypt"

conn %default
\tikelifetime=1h
\tauthby=secret

conn base
\tleft=192.0.2.1
\tright=192.0.2.2
\tleftid=@west
\trightid="@east"   # trailing comment

conn child
\talso=base
\tleftsubnet=198.51.100.0/24
\trightsubnets={203.0.113.0/25 203.0.113.128/25}
\tike=aes_gcm256-sha2;dh19
\tesp=aes128-sha1
\tauto=start
\tkeylife=2h
"""


def test_basic_file_resolves_default_and_also() -> None:
    cfg = parse_config_text(BASIC, "ipsec.conf")
    assert cfg.ok, [str(d) for d in cfg.diagnostics]
    # leftsubnet= is pair number 0 and the two rightsubnets= are 1 and 2 (Libreswan)
    assert list(cfg.conns) == ["base", "child/0x1", "child/0x2"]
    assert cfg.conn_names == ["base", "child"]
    c = cfg.conns["child/0x1"]
    assert c.connalias == "child" and cfg.conns["base"].connalias is None
    assert c.left.host_addr == ipaddress.ip_address("192.0.2.1")
    assert str(c.left.id) == "@west" and c.right.id is not None
    assert c.right.id.data == b"east"
    assert c.left.subnets == [ipaddress.ip_network("198.51.100.0/24")]
    assert c.right.subnets == [ipaddress.ip_network("203.0.113.0/25")]
    assert cfg.conns["child/0x2"].right.subnets == [ipaddress.ip_network("203.0.113.128/25")]
    assert c.authby == "secret"
    assert c.ikelifetime == 3600.0
    assert c.salifetime == 7200.0  # keylife= is an alias of ipsec-lifetime=
    assert c.auto == "start"
    assert c.ike is not None and c.ike[0].ke == (19,)
    assert c.also == ["base"]
    assert c.origins["left"].line == 14  # inherited through also=, keeps its own line
    assert cfg.setup.uniqueids is False
    assert cfg.setup.plutodebug == ["all", "crypt"]


def test_unknown_key_is_a_file_error_with_line() -> None:
    cfg = parse_config_text("conn a\n\tleft=192.0.2.1\n\tbogus=1\n", "f.conf")
    assert not cfg.ok
    assert str(cfg.file_errors[0]).startswith("f.conf:3: ")
    assert "bogus" in str(cfg.file_errors[0])


def test_unindented_key_and_text_are_syntax_errors() -> None:
    cfg = parse_config_text("conn a\nleft=1.2.3.4\n", "f.conf")
    assert not cfg.ok and cfg.file_errors[0].line == 2
    cfg = parse_config_text("conn a\n\tJust some words\n", "f.conf")
    assert not cfg.ok and cfg.file_errors[0].line == 2


def test_also_loop_inserts_each_section_once() -> None:
    """ipsec.conf(5): "duplicate insertions of the same section are ignored" (Libreswan
    5.2 too): a loop is no error (tests/config/test_cfg_redteam25.py)."""
    text = ("conn a\n\talso=b\nconn b\n\talso=a\n\tleft=192.0.2.1\nconn c\n"
            "\tleft=192.0.2.1\n\tright=%any\n\tauthby=secret\n")
    cfg = parse_config_text(text, "f.conf")
    assert cfg.ok and not cfg.failed
    assert list(cfg.conns) == ["a", "b", "c"]
    assert cfg.conns["a"].left.host == "192.0.2.1"


def test_include_relative_glob(tmp_path: pathlib.Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "one.conf").write_text("conn one\n\tleft=192.0.2.1\n\tright=%any\n"
                                            "\tauthby=secret\n")
    (tmp_path / "d" / "two.conf").write_text("conn two\n\tleft=192.0.2.1\n\tright=%any\n"
                                            "\tauthby=secret\n")
    main = tmp_path / "ipsec.conf"
    main.write_text("include d/*.conf\ninclude missing/*.conf\n")
    cfg = load_config(str(main))
    assert cfg.ok and list(cfg.conns) == ["one", "two"]
    assert cfg.conns["two"].origin is not None
    assert cfg.conns["two"].origin.file.endswith("two.conf")
    assert any(d.severity == "warning" and "missing" in d.message for d in cfg.diagnostics)


def test_include_depth_is_limited(tmp_path: pathlib.Path) -> None:
    (tmp_path / "self.conf").write_text("include self.conf\n")
    cfg = load_config(str(tmp_path / "self.conf"))
    assert not cfg.ok
    assert any("too deep" in d.message for d in cfg.file_errors)


def test_build_connection_for_whack() -> None:
    conn = build_connection("w", {"left": "192.0.2.1", "right": "%any",
                                  "authby": "secret", "rightid": "@road"})
    assert conn.right.is_any and conn.right.id is not None and conn.authby == "secret"


def test_bench_generator_config_resolves() -> None:
    """The benchmark's generated file (also= chains, %default) resolves correctly."""
    from bench.config_load import make_config

    cfg = parse_config_text(make_config(30), "bench.conf")
    assert cfg.ok
    # rightsubnets= with a leftsubnet=: one conn per pair, peer7/0x1 and peer7/0x2
    peer = cfg.conns["peer7/0x1"]
    assert peer.also == ["site7", "base"] and peer.connalias == "peer7"
    assert str(peer.left.host_addr) == "192.0.2.1" and peer.authby == "secret"
    assert [str(n) for n in peer.right.subnets] == ["172.23.0.0/24"]
    assert [str(n) for n in cfg.conns["peer7/0x2"].right.subnets] == ["172.23.1.0/24"]
    assert peer.salifetime == 3600.0 and peer.auto == "add"
    assert cfg.conns["peer0/0x1"].auto == "start"


def test_build_connection_aliases_and_both_sides() -> None:
    conn = build_connection("w", {"left": "192.0.2.1", "right": "192.0.2.2", "keylife": "1h",
                                  "protoport": "udp/1701", "dpdtimeout": "30s",
                                  "authby": "secret"}, enforce_support=False)
    # dpdtimeout= is IKEv1's: IKEv2 ignores it (Libreswan 5.2 warns the same)
    assert conn.salifetime == 3600.0 and conn.dpdtimeout == 0.0
    assert conn.left.protoport == (17, 1701) == conn.right.protoport
    import pytest

    from pypluto.config.parser import ConnError

    with pytest.raises(ConnError) as exc:
        build_connection("w", {"left": "192.0.2.1", "ike": "nonsense"})
    assert exc.value.key == "ike"
    with pytest.raises(ConnError):
        build_connection("w", {"nosuch": "1"})


def test_connection_errors_match_libreswan_messages() -> None:
    base = "conn c\n\tleft=192.0.2.1\n\tright=192.0.2.2\n"
    cfg = parse_config_text(base + "\tauthby=ecdsa-sha1\n", "f")
    assert "authby=ecdsa cannot use sha1, only sha2" in str(cfg.failed["c"][0])
    cfg = parse_config_text(base + "\trightrsasigkey=east\n", "f")
    assert cfg.ok and "c" in cfg.failed and cfg.failed["c"][0].line == 4
    cfg = parse_config_text(base + "\tkeyexchange=ikev1\n\tauthby=null\n", "f")
    assert "ikev1 connection must use authby=" in str(cfg.failed["c"][0])
    cfg = parse_config_text(base + "\tleftsubnet=vhost:%priv\n", "f")
    assert "only valid for IKEv1" in str(cfg.failed["c"][0])
    cfg = parse_config_text(base + "\tikev2=no\n\tleftsubnet=vhost:%priv\n", "f",
                            enforce_support=False)
    assert "c" in cfg.conns and cfg.conns["c"].keyexchange == "ikev1"
    # ... which pluto refuses: IKEv1 is not supported
    cfg = parse_config_text(base + "\tauthby=secret\n\tikev2=no\n", "f")
    assert "c" not in cfg.conns and cfg.failed["c"][0].unsupported


def test_include_fan_out_is_bounded(tmp_path: pathlib.Path) -> None:
    for n in range(6):  # every file includes all six: 6^10 reads without a bound
        (tmp_path / f"f{n}.conf").write_text("include *.conf\n")
    cfg = load_config(str(tmp_path / "f0.conf"))
    assert not cfg.ok
    assert any("more than 1000 files" in d.message or "too deep" in d.message
               for d in cfg.file_errors)


def test_keys_after_include_do_not_join_the_included_section(tmp_path: pathlib.Path) -> None:
    (tmp_path / "inc.conf").write_text("conn inc\n\tleft=192.0.2.1\n\tright=%any\n"
                                        "\tauthby=secret\n")
    (tmp_path / "main.conf").write_text("conn a\n\tleft=192.0.2.9\ninclude inc.conf\n"
                                        "\tright=192.0.2.8\n")
    cfg = load_config(str(tmp_path / "main.conf"))
    assert not cfg.ok and cfg.file_errors[0].line == 4
    assert cfg.conns["inc"].right.host == "%any"
