"""Road-warrior keys (addresspool=, modecfg*): good values load, bad ones refuse the conn."""

from __future__ import annotations

import ipaddress

from pypluto.config.parser import parse_config_text

BASE = ("conn rw\n\tauthby=secret\n\tleft=192.0.2.1\n\tleftsubnet=203.0.113.0/24\n"
        "\tright=%any\n\trightid=%any\n")


def test_pool_and_modecfg_keys_load() -> None:
    cfg = parse_config_text(BASE + "\trightaddresspool=198.51.100.10-198.51.100.99,"
                            "2001:db8::/120\n\tleftmodecfgserver=yes\n\trightmodecfgclient=yes\n"
                            "\tmodecfgdns=\"192.0.2.53, 2001:db8::53\"\n"
                            "\tmodecfgdomains=corp.example\n", "f")
    c = cfg.conns["rw"]
    assert c.right.addresspool == "198.51.100.10-198.51.100.99,2001:db8::/120"
    assert c.left.modecfgserver and c.right.modecfgclient
    assert c.raw["modecfgdns"] == "192.0.2.53, 2001:db8::53"
    assert c.right.host_addr is None and ipaddress.ip_address("192.0.2.1") == c.left.host_addr


def test_bad_pool_and_dns_refuse_the_conn_with_file_and_line() -> None:
    for extra, what in (("\trightaddresspool=198.51.100.99-198.51.100.10\n", "start is after end"),
                        ("\trightaddresspool=pool-of-addresses\n", "rightaddresspool="),
                        ("\trightaddresspool=192.0.2.0/24,198.51.100.0/24\n", "two IPv4"),
                        ("\tmodecfgdns=dns.example\n", "not an IP address")):
        cfg = parse_config_text(BASE + extra, "f")
        assert "rw" not in cfg.conns, extra
        err = cfg.failed["rw"][0]
        assert what in str(err) and err.line == 7, (extra, str(err))


def test_banner_is_refused() -> None:
    cfg = parse_config_text(BASE + "\tmodecfgbanner=hello\n", "f")
    assert "rw" not in cfg.conns
    assert "modecfgbanner is not supported by pypluto" in str(cfg.failed["rw"][0])


def test_global_redirect_to_takes_addresses_and_host_names() -> None:
    from pypluto.ike.settings import EngineSettings
    cfg = parse_config_text("config setup\n\tglobal-redirect=yes\n"
                            "\tglobal-redirect-to=vpn_b.example\n", "f")
    (d,) = cfg.diagnostics
    assert d.line == 3 and "neither an IP address nor a host name" in d.message
    cfg = parse_config_text("config setup\n\tglobal-redirect=yes\n"
                            "\tglobal-redirect-to=gw-b.example\n", "f")
    assert not cfg.diagnostics
    assert EngineSettings.from_setup(cfg.setup).global_redirect_to == ["gw-b.example"]
    cfg = parse_config_text("config setup\n\tglobal-redirect=auto\n"
                            "\tglobal-redirect-to=192.0.2.9,2001:db8::9\n", "f")
    assert not cfg.diagnostics
    s = EngineSettings.from_setup(cfg.setup)
    assert s.global_redirect == "auto"
    assert [str(a) for a in s.global_redirect_to] == ["192.0.2.9", "2001:db8::9"]
