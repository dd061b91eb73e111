"""ppk=, ppk-ids= (ipsec.conf(5)) and PPKS records (ipsec.secrets(5)), RFC 8784."""

from __future__ import annotations

import pytest

from pypluto.config.parser import parse_config_text
from pypluto.config.secrets import parse_secrets_text

BASE = ("conn c\n\tleft=192.0.2.1\n\tright=192.0.2.2\n\tauthby=secret\n"
        "\tleftid=@west\n\trightid=@east\n")


@pytest.mark.parametrize("value,mode", [
    ("never", "no"), ("no", "no"), ("false", "no"), ("off", "no"), ("n", "no"),
    ("permit", "permit"), ("propose", "propose"), ("yes", "propose"), ("true", "propose"),
    ("on", "propose"), ("y", "propose"), ("insist", "insist"), ("always", "insist")])
def test_ppk_values(value: str, mode: str) -> None:
    cfg = parse_config_text(BASE + f"\tppk={value}\n", "ipsec.conf")
    assert cfg.ok, [str(d) for d in cfg.diagnostics]
    assert cfg.conns["c"].ppk == mode


def test_ppk_bad_value_is_an_error() -> None:
    cfg = parse_config_text(BASE + "\tppk=maybe\n", "ipsec.conf")
    assert "c" not in cfg.conns


def test_ppk_ids_list() -> None:
    cfg = parse_config_text(BASE + '\tppk=insist\n\tppk-ids="A, B C,D"\n', "ipsec.conf")
    assert cfg.ok, [str(d) for d in cfg.diagnostics]
    assert cfg.conns["c"].ppk_ids == [b"A", b"B", b"C", b"D"]


@pytest.mark.parametrize("value,msg", [
    ('","', "names no PPK_ID"),
    ("x" * 65, "is longer than 64 bytes")])
def test_bad_ppk_ids_refuse_the_conn_only(value: str, msg: str) -> None:
    text = BASE + f"\tppk=insist\n\tppk-ids={value}\n" + \
        "conn other\n\tleft=192.0.2.1\n\tright=192.0.2.3\n\tauthby=secret\n"
    cfg = parse_config_text(text, "ipsec.conf")
    assert "c" not in cfg.conns and "other" in cfg.conns
    errs = [str(d) for d in cfg.diagnostics if d.severity == "error"]
    assert len(errs) == 1 and msg in errs[0] and errs[0].startswith("ipsec.conf:"), errs


def test_ppks_records_text_hex_base64() -> None:
    store = parse_secrets_text(
        '@west @east : PSK "0123456789abcdefg0123456789abcdefg"\n'
        '@west @east : PPKS "A" "narodnifrontlimannovisadsrbija-0123"\n'
        '@west @east : PPKS "hex" 0x' + "ab" * 32 + "\n"
        ': PPKS "b64"\n  0s' + "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=" + "\n",
        "ipsec.secrets")
    assert store.ok and not store.diagnostics, [str(d) for d in store.diagnostics]
    assert store.ppk_for(b"A") == b"narodnifrontlimannovisadsrbija-0123"
    assert store.ppk_for(b"hex") == bytes([0xAB]) * 32
    assert store.ppk_for(b"b64") == bytes(range(32))
    assert store.ppk_for(b"nope") is None
    from pypluto.config.ids import parse_id
    found = store.ppk_for_ids(parse_id("@west"), parse_id("@east"))
    assert found == (b"A", b"narodnifrontlimannovisadsrbija-0123")
    assert "narodni" not in repr(store)


@pytest.mark.parametrize("line,msg", [
    ("@w @e : PPKS A \"secret-secret-secret-secret-1234\"", "must be in double quotes"),
    ("@w @e : PPKS \"A\"", "PPKS needs a PPK_ID and a key"),
    ("@w @e : PPKS \"\" \"secret-secret-secret-secret-1234\"", "empty PPK_ID"),
    ("@w @e : PPKS \"A\" 0xZZ", "bad hex value"),
    ("@w @e : PPKS \"A\" \"\"", "empty PPK")])
def test_bad_ppks_record_is_a_clear_error(line: str, msg: str) -> None:
    store = parse_secrets_text(line + '\n@w @e : PSK "0123456789abcdefg0123"\n', "s")
    errs = [str(d) for d in store.diagnostics if d.severity == "error"]
    assert len(errs) == 1 and msg in errs[0] and errs[0].startswith("s:1"), errs
    assert [s.kind for s in store.secrets] == ["PSK"]  # the next record still loads


def test_weak_ppk_warns() -> None:
    store = parse_secrets_text('@w @e : PPKS "A" "short"\n', "s")
    assert store.ppk_for(b"A") == b"short"
    assert any("PPK is weak" in str(d) for d in store.diagnostics)
