"""Bad input never produces a traceback: random and mutated configs (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pypluto.config.ids import IdError, parse_id
from pypluto.config.parser import parse_config_text
from pypluto.config.proposals import ProposalError, parse_proposals
from pypluto.config.secrets import parse_secrets_text

SEED_CONF = """\
config setup
\tlogfile=/tmp/pluto.log
\tplutodebug="all"
conn %default
\tikelifetime=1h
conn base
\tleft=192.0.2.1
\tleftid=@west
\tright=%any
\trightsubnets={198.51.100.0/24 203.0.113.0/24}
conn c
\talso=base
\tike=aes_gcm256-sha2;dh19,aes-sha1;modp2048
\tesp=aes128-sha1;dh14
\tauthby=secret
\tleftprotoport=17/1701
\trekeyfuzz=50%
\tauto=start
include missing/*.conf
"""
SEED_SECRETS = '@a @b : PSK "0123456789abcdefgh"\n"2001:db8::1" : PSK 0x0102_0304\n' \
    ': PPKS "id" 0sAAECAwQ=\n@u : XAUTH "pw"\n'

ALPHABET = st.sampled_from(list("conf setup=\t \n#\"@%:;,+-_./{}0123456789abcxyz") +
                           ["conn ", "also=", "include ", "\x00", "é", "\r\n", "left=",
                            "ike=", "leftid=", "authby="])
FAST = settings(max_examples=100, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def _check_conf(text: str) -> None:
    cfg = parse_config_text(text, "fuzz.conf")
    for d in cfg.diagnostics:
        assert str(d).startswith("fuzz.conf") or str(d).startswith("/")
    for conn in cfg.conns.values():
        assert conn.name


@FAST
@given(st.lists(ALPHABET, max_size=200).map("".join))
def test_random_conf_text(text: str) -> None:
    _check_conf(text)


@FAST
@given(st.data())
def test_mutated_conf(data: st.DataObject) -> None:
    text = SEED_CONF
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.integers(0, len(text)))
        op = data.draw(st.sampled_from(["insert", "delete", "replace"]))
        chunk = data.draw(st.lists(ALPHABET, min_size=1, max_size=8).map("".join))
        if op == "insert":
            text = text[:pos] + chunk + text[pos:]
        elif op == "delete":
            text = text[:pos] + text[pos + len(chunk):]
        else:
            text = text[:pos] + chunk + text[pos + len(chunk):]
    _check_conf(text)


@FAST
@given(st.binary(max_size=300))
def test_random_bytes(blob: bytes) -> None:
    _check_conf(blob.decode("utf-8", errors="replace"))
    parse_secrets_text(blob.decode("latin-1"), "fuzz.secrets")


@FAST
@given(st.data())
def test_mutated_secrets(data: st.DataObject) -> None:
    text = SEED_SECRETS
    pos = data.draw(st.integers(0, len(text)))
    chunk = data.draw(st.lists(ALPHABET, min_size=1, max_size=10).map("".join))
    mutated = text[:pos] + chunk + text[pos:]
    store = parse_secrets_text(mutated, "fuzz.secrets")
    # a mutation that turns the key into an include pattern makes it a file name,
    # which the "no file matches" warning rightly names
    as_include = any(ln.lstrip().startswith("include") and "0123456789abcdefgh" in ln
                     for ln in mutated.splitlines())
    assert as_include or "0123456789abcdefgh" not in "\n".join(
        str(d) for d in store.diagnostics)


@FAST
@given(st.text(alphabet=st.sampled_from(list("aesgcmshd0123456789_-+;,=lkpxnul")),
               max_size=40), st.sampled_from(["IKE", "ESP", "AH"]))
def test_proposal_strings(text: str, proto: str) -> None:
    try:
        parse_proposals(text, proto)
    except ProposalError:
        pass


@FAST
@given(st.text(max_size=60))
def test_id_strings(text: str) -> None:
    try:
        parse_id(text)
    except IdError:
        pass


@pytest.mark.parametrize("text", ["conn", "conn a b", "config", "config setup extra",
                                  "\tleft=1", "include", "include a b", "conn a\n\tx",
                                  "conn a\n\tleft=\"unterminated", "conn a\n\tleft={open",
                                  "version 3", "conn a\n\talso=a"])
def test_edge_cases(text: str) -> None:
    _check_conf(text)


@FAST
@given(st.binary(max_size=80))
def test_der_dn_decoder(blob: bytes) -> None:
    from pypluto.config.ids import dn_attributes

    out = dn_attributes(b"\x30" + bytes([len(blob)]) + blob if len(blob) < 128 else blob)
    assert out is None or isinstance(out, list)
