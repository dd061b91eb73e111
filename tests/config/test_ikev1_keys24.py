"""IKEv1-only keys on an IKEv2 conn (every conn pypluto loads is IKEv2), as Libreswan 5.2.

5.2 loads the conn and ignores these keys there:

- ``ikepad=`` (IKEv1 padding workaround): any value, with the warning
  ``IKEv2 connection ignores ikepad=VALUE`` (testing/pluto/addconn-47-ikepad: yes, no
  and auto each warn; ``ikepad=`` alone does not);
- ``nat-ikev1-method=`` (IKEv1 NAT-T vendor IDs), ``xauthby=`` and ``xauthfail=`` (IKEv1
  XAUTH): silently (programs/pluto/connections.c only stores them for IKEv1).

The keys 5.2 gives an IKEv2 meaning (``remote-peer-type=cisco``: PLUTO_IS_PEER_CISCO
for the updown script; ``leftxauthserver=`` / ``leftxauthclient=``: INITIAL_CONTACT,
uniqueids and connection switching; ``leftusername=``: documented as the IKEv2 CP user
name; ``modecfgbanner=``: documented as sent by an IKEv2 server) stay refused, and
``aggressive=yes`` is refused as 5.2 does ("cannot specify aggressive mode with IKEv2").
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from pypluto.config.parser import parse_config_text

BASE = "conn c\n\tleft=192.0.2.1\n\tright=192.0.2.2\n\tauthby=secret\n"  # key on line 5


def _load(extra: str) -> Any:
    return parse_config_text(BASE + extra, "f")


def _same_conn(extra: str) -> None:
    """The conn with ``extra`` is the conn without it (the key changes nothing)."""
    skip = {"raw", "origin", "origins"}

    def fields(text: str) -> dict[str, Any]:
        conn = _load(text).conns["c"]
        return {f.name: getattr(conn, f.name) for f in dataclasses.fields(conn)
                if f.name not in skip}

    assert fields(extra) == fields("")


@pytest.mark.parametrize(("value", "shown"), [
    ("yes", "yes"), ("no", "no"), ("auto", "auto"), ("true", "yes"), ("off", "no")])
def test_ikepad_is_ignored_with_libreswans_warning(value: str, shown: str) -> None:
    cfg = _load(f"\tikepad={value}\n")
    assert "c" in cfg.conns and not cfg.unsupported and not cfg.errors
    assert [str(d) for d in cfg.diagnostics if d.severity == "warning"] == [
        f"f:5: warning: while loading 'c': IKEv2 connection ignores ikepad={shown}"]
    _same_conn(f"\tikepad={value}\n")


def test_ikepad_unset_or_invalid() -> None:
    cfg = _load("\tikepad=\n")
    assert "c" in cfg.conns and not cfg.diagnostics
    assert "c" not in _load("\tikepad=maybe\n").conns  # 5.2: not a yes/no/auto value


@pytest.mark.parametrize("line", [
    "nat-ikev1-method=drafts", "nat-ikev1-method=rfc", "nat-ikev1-method=both",
    "nat-ikev1-method=none", "xauthby=file", "xauthby=pam", "xauthby=alwaysok",
    "xauthfail=hard", "xauthfail=soft"])
def test_ikev1_only_keys_load_silently(line: str) -> None:
    cfg = _load(f"\t{line}\n")
    assert "c" in cfg.conns, [str(d) for d in cfg.diagnostics]
    assert cfg.diagnostics == [] and cfg.ok
    _same_conn(f"\t{line}\n")


@pytest.mark.parametrize("line", ["nat-ikev1-method=cisco", "xauthby=ldap", "xauthfail=maybe"])
def test_invalid_values_still_refuse_the_conn(line: str) -> None:
    assert "c" not in _load(f"\t{line}\n").conns


@pytest.mark.parametrize(("line", "said"), [
    ("remote-peer-type=cisco", "remote-peer-type is not supported by pypluto"),
    ("leftxauthserver=yes", "leftxauthserver=yes is not supported by pypluto"),
    ("leftxauthclient=yes", "leftxauthclient=yes is not supported by pypluto"),
    ("leftusername=alice", "leftusername is not supported by pypluto"),
    ("modecfgbanner=hello", "modecfgbanner is not supported by pypluto"),
    ("aggressive=yes", "aggressive=yes is not supported by pypluto"),
])
def test_keys_with_an_ikev2_meaning_stay_refused(line: str, said: str) -> None:
    cfg = _load(f"\t{line}\n")
    assert "c" not in cfg.conns
    assert said in str(cfg.failed["c"][0])
