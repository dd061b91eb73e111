"""daemon/updown.py: the environment a leftupdown= script sees, and how a run can fail."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import stat

from pypluto.daemon import updown as U


def child(**kw: object) -> U.UpdownChild:
    base: dict[str, object] = dict(
        conn="west-east", serial=3,
        me=ipaddress.ip_address("192.0.2.1"), peer=ipaddress.ip_address("192.0.2.2"),
        my_client=ipaddress.ip_network("198.51.100.0/24"),
        peer_client=ipaddress.ip_network("203.0.113.0/24"),
        my_id="@west", peer_id="@east", reqid=16389, spi_in=0x11, spi_out=0xABCDEF01,
        stack="userspace",
    )
    base.update(kw)
    return U.UpdownChild(**base)  # type: ignore[arg-type]


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def script(tmp_path, body: str, mode: int = 0o755) -> str:  # type: ignore[no-untyped-def]
    p = tmp_path / "updown.sh"
    p.write_text("#!/bin/sh\n" + body)
    p.chmod(mode)
    return str(p)


def test_env_has_libreswans_variables() -> None:
    env = U.updown_env(U.Verb.UP, child())
    assert env["PLUTO_VERB"] == "up-client"
    assert env["PLUTO_CONNECTION"] == "west-east"
    assert env["PLUTO_ME"] == "192.0.2.1" and env["PLUTO_PEER"] == "192.0.2.2"
    assert env["PLUTO_MY_CLIENT"] == "198.51.100.0/24"
    assert env["PLUTO_MY_CLIENT_NET"] == "198.51.100.0"
    assert env["PLUTO_MY_CLIENT_MASK"] == "255.255.255.0"
    assert env["PLUTO_PEER_CLIENT"] == "203.0.113.0/24"
    assert env["PLUTO_PEER_ID"] == "@east" and env["PLUTO_MY_ID"] == "@west"
    assert env["PLUTO_SA_REQID"] == env["PLUTO_REQID"] == "16389"
    assert env["PLUTO_SA_TYPE"] == "ESP"
    assert env["SPI_OUT"] == "0xabcdef01"
    assert env["PLUTO_CONN_ADDRFAMILY"] == "ipv4"
    assert env["PLUTO_STACK"] == "userspace"


def test_host_verbs_when_our_end_is_the_host() -> None:
    c = child(my_client=ipaddress.ip_network("192.0.2.1/32"))
    assert U.verb_name(U.Verb.PREPARE, c) == "prepare-host"
    assert U.verb_name(U.Verb.UNROUTE, child()) == "unroute-client"


def test_ipv6_masks() -> None:
    c = child(me=ipaddress.ip_address("2001:db8::1"), peer=ipaddress.ip_address("2001:db8::2"),
              my_client=ipaddress.ip_network("2001:db8:1::/48"),
              peer_client=ipaddress.ip_network("2001:db8:2::/64"))
    env = U.updown_env(U.Verb.DOWN, c)
    assert env["PLUTO_MY_CLIENT_MASK"] == "ffff:ffff:ffff::"
    assert env["PLUTO_CONN_ADDRFAMILY"] == "ipv6"


def test_disabled_and_empty_scripts_do_not_run() -> None:
    assert not U.script_enabled(None)
    assert not U.script_enabled("")
    assert not U.script_enabled("%disabled")
    assert U.script_enabled("/usr/local/bin/fw-up --quiet")


def test_script_sees_the_environment_and_its_output_is_kept(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "seen"
    s = script(tmp_path, f'echo "$PLUTO_VERB $PLUTO_PEER_CLIENT $PLUTO_REQID" > {out}\necho hello\n')
    res = run(U.run_updown(s, U.Verb.UP, child()))
    assert res.ok and res.returncode == 0
    assert out.read_text().split() == ["up-client", "203.0.113.0/24", "16389"]
    assert res.output == ["hello"]


def test_arguments_in_the_command_are_passed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "args"
    s = script(tmp_path, f'echo "$1" > {out}\n')
    res = run(U.run_updown(f"{s} iptables", U.Verb.ROUTE, child()))
    assert res.ok and out.read_text().strip() == "iptables"


def test_peer_id_cannot_inject_shell(tmp_path) -> None:  # type: ignore[no-untyped-def]
    marker = tmp_path / "pwned"
    s = script(tmp_path, 'echo "$PLUTO_PEER_ID"\n')
    evil = f"@x'; touch {marker}; echo '$(touch {marker})"
    res = run(U.run_updown(s, U.Verb.UP, child(peer_id=evil)))
    assert res.ok and not marker.exists()
    assert res.output == [evil]


def test_peer_id_with_control_characters_is_escaped(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A NUL cannot travel in the environment (the script would not run at all) and a
    newline or ESC would forge lines: such an ID reaches the script escaped as in the
    log; an ordinary one, backslashes of a DN included, unchanged."""
    s = script(tmp_path, 'printf "%s|%s\\n" "$PLUTO_PEER_ID" "$PLUTO_PEER_CA"\n')
    res = run(U.run_updown(s, U.Verb.UP, child(peer_id="@a\x00b\nc\x1b[2J",
                                                 peer_ca="CN=x\x00y")))
    assert res.ok, res.error
    assert res.output == ["@a\\x00b\\nc\\x1b[2J|CN=x\\x00y"]
    plain = r"C=CH, O=Acme\, Inc., CN=east"
    res = run(U.run_updown(s, U.Verb.UP, child(peer_id=plain, peer_ca="CN=root")))
    assert res.output == [plain + "|CN=root"]


def test_exit_1_fails_and_is_fatal_for_up(tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = script(tmp_path, "echo refusing >&2\nexit 1\n")
    res = run(U.run_updown(s, U.Verb.UP, child()))
    assert not res.ok and res.returncode == 1 and res.output == ["refusing"]
    lines: list[tuple[str, str]] = []
    U.log_result(res, lambda m, lvl: lines.append((m, lvl)))
    assert lines[-1][1] == "error" and "exited with status 1" in lines[-1][0]
    assert "the Child SA fails" in lines[-1][0]


def test_down_failure_is_only_a_warning(tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = script(tmp_path, "exit 3\n")
    res = run(U.run_updown(s, U.Verb.DOWN, child()))
    lines: list[tuple[str, str]] = []
    U.log_result(res, lambda m, lvl: lines.append((m, lvl)))
    assert not res.ok and lines == [("down-client failed: updown script exited with status 3",
                                     "warning")]


def test_hanging_script_is_killed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = script(tmp_path, "sleep 30 & wait\n")
    res = run(U.run_updown(s, U.Verb.PREPARE, child(), timeout=0.5))
    assert not res.ok and res.returncode is None and "timed out" in res.error


def test_missing_and_not_executable(tmp_path) -> None:  # type: ignore[no-untyped-def]
    res = run(U.run_updown(str(tmp_path / "nope.sh"), U.Verb.UP, child()))
    assert not res.ok and "does not exist" in res.error
    s = script(tmp_path, "exit 0\n", mode=0o644)
    assert not os.stat(s).st_mode & stat.S_IXUSR
    res = run(U.run_updown(s, U.Verb.UP, child()))
    assert not res.ok and "not executable" in res.error
