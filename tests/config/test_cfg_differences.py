"""Each deliberate difference from Libreswan 4.10, pinned with its reason.

The agreement test (``test_cfg_agreement.py``) lists the files; these tests show the
behaviour on minimal input so that a change is noticed even without ../shared.
"""

from __future__ import annotations

from pypluto.config.parser import ConfigFile, parse_config_text


def _conn(body: str) -> str:
    return "conn c\n\tleft=192.0.2.1\n\tright=192.0.2.2\n" + body


def _parse(text: str, filename: str = "<string>") -> ConfigFile:
    """These tests compare the *parse* with Libreswan's: keys pypluto refuses as not
    supported (issue 12) are loaded here; the refusals are tested in test_cfg_registry."""
    return parse_config_text(text, filename, enforce_support=False)


def test_keyexchange_ikev2_is_accepted() -> None:
    # Libreswan 5.x: keyexchange=ikev1|ikev2; 4.10 only knew keyexchange=ike.
    cfg = _parse(_conn("\tkeyexchange=ikev2\n"))
    assert cfg.ok and cfg.conns["c"].keyexchange == "ikev2"
    cfg = _parse(_conn("\tkeyexchange=ikev1\n"))
    assert cfg.ok and cfg.conns["c"].keyexchange == "ikev1"
    # pluto refuses it (IKEv2 only), naming the line: never negotiated as IKEv2
    cfg = parse_config_text(_conn("\tauthby=secret\n\tkeyexchange=ikev1\n"), "f")
    assert "c" not in cfg.conns
    assert str(cfg.failed["c"][0]) == ("f:5: keyexchange=ikev1 is not supported by pypluto "
                                       "(IKEv1 only; pypluto speaks IKEv2 only) (conn 'c' "
                                       "is not loaded)")


def test_ppk_ids_is_a_key() -> None:
    # ppk-ids= is a 5.x key; 4.10 reported a syntax error.
    cfg = _parse(_conn("\tppk=insist\n\tppk-ids=A,B\n"))
    assert cfg.ok and cfg.conns["c"].ppk == "insist"
    assert cfg.conns["c"].raw["ppk-ids"] == "A,B"


def test_addke_in_ike_is_accepted() -> None:
    # RFC 9370 additional key exchanges, 5.x syntax.
    cfg = _parse(_conn("\tike=aes128-sha2-dh31;addke1=ml_kem_768\n"))
    assert cfg.ok
    ike = cfg.conns["c"].ike
    assert ike is not None and ike[0].addke == ((36,),)


def test_bad_duration_is_an_error() -> None:
    # 5.x validates durations; 4.10 silently accepted "10seconds" and "0xA".
    for bad in ("10seconds", "0xA"):
        cfg = _parse(_conn(f"\trekeymargin={bad}\n"), "f.conf")
        assert not cfg.ok
        assert cfg.file_errors[0].line == 4 and "rekeymargin" in cfg.file_errors[0].message
    assert _parse(_conn("\trekeymargin=10s\n")).ok


def test_bad_percentage_is_an_error() -> None:
    # 5.x validates percentages; 4.10 accepted "10foo".
    assert not _parse(_conn("\trekeyfuzz=10foo\n")).ok
    cfg = _parse(_conn("\trekeyfuzz = 10%\n"))
    assert cfg.ok and cfg.conns["c"].rekeyfuzz == 10.0


def test_unknown_host_keyword_is_kept_with_a_warning() -> None:
    # 4.10 dropped left=%eth1 silently (a KLIPS-era interface name); we keep the
    # text, leave the address unresolved and warn, so the user sees it.
    cfg = _parse("conn c\n\tleft=%eth1\n\tright=192.0.2.2\n", "f.conf")
    assert cfg.ok
    assert cfg.conns["c"].left.host == "%eth1" and cfg.conns["c"].left.host_addr is None
    assert any(d.severity == "warning" and "%eth1" in d.message for d in cfg.diagnostics)


def test_replay_window_above_32_bits_rejects_the_conn() -> None:
    # 4.10 loads replay-window=4294967296 and truncates it; the ESP window is
    # 32 bits, so the conn is rejected (the file still loads).
    cfg = _parse(_conn("\treplay-window=4294967296\n"))
    assert cfg.ok and "c" not in cfg.conns and "c" in cfg.failed
    # Libreswan 5.2 refuses above its XFRM limit (2^32 - 8); the kernel's replay bitmap
    # holds 4096 packets, which pypluto checks when the conn loads (test_cfg_redteam25.py)
    cfg = _parse(_conn("\treplay-window=4096\n"))
    assert cfg.conns["c"].replay_window == 4096
