"""Operations as a Libreswan operator meets them (issue 19): restart after kill -9,
log reopening for logrotate, ``ipsec add`` of a loaded conn, ``%defaultroute``."""

from __future__ import annotations

import json
import os
import signal

import pytest
from plutoproc import NetNS, wait_for
from test_daemon_pair import CONF, child_sas, pair, userspace_udp_tunnel  # noqa: F401 - the fixture

from pypluto.control.client import call

pytestmark = pytest.mark.netns


def _rules(ns: NetNS) -> list[dict]:
    return json.loads(ns.run("ip", "-j", "rule", "show").stdout or "[]")


def _table(ns: NetNS, table: int = 4500) -> list[dict]:
    r = ns.run("ip", "-j", "route", "show", "table", str(table), check=False)
    return json.loads(r.stdout or "[]") if r.returncode == 0 else []


def test_restart_after_sigkill_removes_leftovers(pair):  # noqa: F811
    """kill -9 leaves the lock, the socket, the rule and the routes; the next start
    removes them (here with a different backend, so pluto itself must) and works."""
    _, w_ns, _ = pair
    west, east = userspace_udp_tunnel(pair)
    assert any(x.get("priority") == 4500 and str(x.get("table")) == "4500"
               for x in _rules(w_ns))
    assert any(x.get("priority") == 4498 for x in _rules(w_ns))  # own-socket bypass
    assert _table(w_ns)
    assert w_ns.run("ip", "link", "show", "pluto0", check=False).returncode == 0
    assert west.proc is not None
    old_pid = west.proc.pid
    west.proc.send_signal(signal.SIGKILL)
    west.proc.wait(30)
    # what a SIGKILL leaves behind
    assert west.pidfile.read_text().strip() == str(old_pid)
    assert os.path.exists(west.ctl)
    assert any(x.get("priority") == 4500 for x in _rules(w_ns))
    # (the routes through pluto0 go with the device; the rules stay)
    # the TUN device is not persistent: gone with the process
    wait_for(lambda: w_ns.run("ip", "link", "show", "pluto0", check=False).returncode != 0,
             10, "the TUN device to go")
    # the next start (another backend: the userspace plane's own start-up clean-up
    # cannot be what removes them)
    west.start("--nofork", "--logfile", str(west.dir / "log2"), "--config",
               str(west.dir.parent / "west.conf"), "--secretsfile",
               str(west.dir.parent / "ipsec.secrets"), "--use-none")
    west.wait_ready()
    assert int(west.pidfile.read_text()) == west.proc.pid != old_pid
    log2 = (west.dir / "log2").read_text()
    assert f"removed stale lock file \"{west.pidfile}\" (PID {old_pid} is not a running " \
        "pluto)" in log2
    assert "removed leftover of a pluto that did not exit cleanly: 3 IPv4 rule(s) at " \
        "priorities 4498-4500" in log2 or "removed leftover of a pluto that did not exit " \
        "cleanly: 2 IPv4 rule(s) at priorities 4498-4500" in log2, log2
    assert not any(x.get("priority") in (4498, 4499, 4500) for x in _rules(w_ns))
    assert not _table(w_ns) and not _table(w_ns, 4500 + 0x10000)
    # and it works: a new IKE SA and Child SA with east
    r = west.whack("--name", "west-east", "--initiate")
    assert r.returncode == 0, r.stdout + west.log()
    assert len(child_sas(west)) == 1
    assert east.ready()


def test_reopenlogs_and_sighup_reopen_the_logfile(make_pluto):
    """logrotate: move the file away, then whack --reopenlogs (or SIGHUP) makes a new one."""
    p = make_pluto()
    log = p.dir / "log"
    proc = p.start("--nofork", "--use-none", "--logfile", str(log))
    p.wait_ready()
    os.rename(log, p.dir / "log.1")
    out: list[str] = []
    reply = call(p.ctl, "reopenlogs", {}, timeout=10, on_output=out.append)
    assert reply.rc == 0
    assert out == [f'reopened logfile "{log}"']
    wait_for(log.exists, 10, "the new log file")
    assert f'reopened logfile "{log}"' in log.read_text()
    assert "Pluto initialized" in (p.dir / "log.1").read_text()
    assert "reopened" not in (p.dir / "log.1").read_text()
    os.rename(log, p.dir / "log.1b")
    r = p.whack("--reopenlogs")  # the same through whack's command line
    assert r.returncode == 0 and r.stdout == f'reopened logfile "{log}"\n'
    wait_for(log.exists, 10, "the log file reopened by whack --reopenlogs")
    p.whack("--status")  # later lines go to the new file
    os.rename(log, p.dir / "log.2")
    proc.send_signal(signal.SIGHUP)
    wait_for(log.exists, 10, "the log file reopened on SIGHUP")
    wait_for(lambda: "Pluto ignores SIGHUP" in log.read_text(), 10, "the SIGHUP line")
    assert f'reopened logfile "{log}"' in log.read_text()
    assert "Pluto ignores SIGHUP" not in (p.dir / "log.2").read_text()
    assert p.ready()


def test_reopenlogs_without_a_logfile_says_so(make_pluto):
    p = make_pluto()
    p.start("--nofork", "--use-none", "--stderrlog")
    p.wait_ready()
    out: list[str] = []
    reply = call(p.ctl, "reopenlogs", {}, timeout=10, on_output=out.append)
    assert reply.rc == 0 and out == ["logging to stderr: nothing to reopen"]


def _add(p, conf: str, name: str) -> tuple[int, list[str]]:
    out: list[str] = []
    reply = call(p.ctl, "add", {"config": conf, "names": [name]}, timeout=20,
                 on_output=out.append)
    return reply.rc, out


def test_add_of_a_live_conn_says_it_replaces_it_and_its_sas(pair):  # noqa: F811
    start, w_ns, e_ns = pair
    east = start("east", e_ns, "add", "--use-none")
    west = start("west", w_ns, "add", "--use-none")
    conf = str(west.dir.parent / "west.conf")
    rc, out = _add(west, conf, "west-east")  # loaded, no SAs: replaced, nothing else said
    assert rc == 0 and out == ['"west-east": replacing connection',
                               '"west-east": added IKEv2 connection'], out
    r = west.whack("--name", "west-east", "--initiate")
    assert r.returncode == 0, r.stdout + west.log()
    ike = json.loads(west.whack("--showstates", "--json").stdout)["ike_sas"][0]
    child = ike["children"][0]["serial"]
    g = west.whack("--globalstatus").stdout.splitlines()
    for line in ("current.states.all=2", "current.states.ipsec=1", "current.states.ike=1",
                 "current.states.enumerate.ESTABLISHED_IKE_SA=1",
                 "current.states.enumerate.ESTABLISHED_CHILD_SA=1",
                 "current.states.enumerate.IKE_SA_INIT_I=0"):
        assert line in g, line
    rc, out = _add(west, conf, "west-east")
    assert rc == 0
    assert out[:2] == ['"west-east": replacing connection',
                       '"west-east": terminating SAs using this connection'], out
    assert out[-1] == '"west-east": added IKEv2 connection', out
    deleting = "\n".join(out[2:-1])
    assert f'#{ike["serial"]}' in deleting and f"#{child}" in deleting, out
    wait_for(lambda: not child_sas(east), 20, "east to see the deletes")
    assert not child_sas(west)
    assert '"west-east": replacing connection' in (west.dir / "log").read_text()


DR_WEST = """\
conn dr
\tauthby=secret
\tleft={left}
\tleftid=@west
\tright=192.0.2.2
\trightid=@east
\tauto=add
{extra}"""
DR_EAST = """\
conn dr
\tauthby=secret
\tleft=192.0.2.1
\tleftid=@west
\tright=192.0.2.2
\trightid=@east
\tauto={auto}
"""


@pytest.mark.parametrize("left,extra", [
    ("%defaultroute", ""),
    # "%any" with "leftnexthop=ADDR" orients the same way (daemon/defaultroute.py,
    # test_ops_units.py), but config/keywords.py refuses an explicit nexthop address
    # until routes can go through it: not testable end to end yet
])
def test_defaultroute_orients_and_up_works(pair, left, extra):  # noqa: F811
    start, w_ns, e_ns = pair
    w_ns.run("ip", "route", "add", "default", "via", "192.0.2.2")
    east = start("east", e_ns, "add", "--use-none", conf_text=DR_EAST)
    west = start("west", w_ns, "add", "--use-none",
                 conf_text=DR_WEST.format(left=left, extra=extra).replace("{", "{{")
                 .replace("}", "}}") + "#{auto}\n")
    st = west.whack("--status").stdout
    assert '"dr": 192.0.2.1[@west]---192.0.2.2...192.0.2.2[@east]' in st, st
    assert '"dr":   host: oriented; local: 192.0.2.1; remote: 192.0.2.2;' in st
    r = west.whack("--name", "dr", "--initiate")
    assert r.returncode == 0, r.stdout + west.log()
    assert len(child_sas(west)) == 1 and len(child_sas(east)) == 1


def test_defaultroute_without_a_default_route_stays_unoriented(pair):  # noqa: F811
    start, w_ns, _e = pair
    west = start("west", w_ns, "add", "--use-none",
                 conf_text=DR_WEST.format(left="%defaultroute", extra="") + "#{auto}\n")
    r = west.whack("--name", "dr", "--initiate")
    assert r.returncode == 22, r.stdout


NOWHERE = """\
conn nowhere
\tauthby=secret
\tleft=192.0.2.1
\tleftid=@west
\tright=192.0.2.3
\trightid=@east
\tretransmit-timeout=3s
\tauto={auto}
"""


def test_unreachable_peer_shows_retransmissions_in_up(pair):  # noqa: F811
    """ipsec up toward nobody: each retransmission is a line, as Libreswan 5.2 prints it."""
    start, w_ns, _e = pair
    west = start("west", w_ns, "add", "--use-none", conf_text=NOWHERE)
    r = west.whack("--name", "nowhere", "--initiate")
    assert r.returncode == 51, r.stdout
    lines = r.stdout.splitlines()
    retrans = [ln for ln in lines if "retransmission" in ln]
    assert retrans == [
        '"nowhere" #1: IKE_SA_INIT_I: retransmission; will wait 1 seconds for response',
        '"nowhere" #1: IKE_SA_INIT_I: retransmission; will wait 2 seconds for response',
    ], lines
    assert lines.index(retrans[0]) > 0  # after "initiating"
    assert retrans[0].split('"nowhere" ')[1] in (west.dir / "log").read_text()
    st = west.whack("--status").stdout
    assert '"nowhere":   policy: IKEv2+PSK+ENCRYPT+TUNNEL+PFS+UP+IKE_FRAG_ALLOW+ESN_NO+ESN_YES;' \
        in st


def test_short_lifetime_is_logged_at_add(pair, tmp_path):  # noqa: F811
    start, w_ns, _e = pair
    conf = NOWHERE.replace("\tauto", "\tsalifetime=5m\n\tauto")
    west = start("west", w_ns, "add", "--use-none", conf_text=conf)
    line = ('"nowhere": ipsec-lifetime=300s must be greater than rekeymargin=540s + '
            "rekeyfuzz=100%; reducing rekeymargin to 150 seconds (rekeying at half the "
            "lifetime)")
    assert line in (west.dir / "log").read_text()
    rc, out = _add(west, str(tmp_path / "west.conf"), "nowhere")
    assert rc == 0 and line in out, out


@pytest.mark.parametrize("west_setting,east_ike_sas", [
    ("", 2),  # the default, as Libreswan 4.10 and 5.2: no INITIAL_CONTACT
    ("\tinitial-contact=yes\n", 1),
])
def test_initial_contact_default_is_no(pair, west_setting, east_ike_sas):  # noqa: F811
    """A restarted west (kill -9) brings the conn up again.  East (uniqueids=no, so only
    INITIAL_CONTACT could replace the old IKE SA, RFC 7296 §2.4) keeps the old IKE SA
    unless west sends INITIAL_CONTACT, which by default it does not."""
    start, w_ns, e_ns = pair
    east = start("east", e_ns, "add", "--use-none",
                 conf_text="config setup\n\tuniqueids=no\n\n" + CONF)
    west_conf = CONF.replace("\tauto={auto}\n", west_setting + "\tauto={auto}\n")
    west = start("west", w_ns, "add", "--use-none", conf_text=west_conf)
    assert west.whack("--name", "west-east", "--initiate").returncode == 0
    assert west.proc is not None
    west.proc.send_signal(signal.SIGKILL)
    west.proc.wait(30)
    west.start("--nofork", "--logfile", str(west.dir / "log2"), "--config",
               str(west.dir.parent / "west.conf"), "--secretsfile",
               str(west.dir.parent / "ipsec.secrets"), "--use-none")
    west.wait_ready()
    r = west.whack("--name", "west-east", "--initiate")
    assert r.returncode == 0, r.stdout

    def established() -> int:
        data = json.loads(east.whack("--showstates", "--json").stdout)["ike_sas"]
        return sum(1 for i in data if "ESTABLISHED" in i["state"])

    if east_ike_sas == 1:
        wait_for(lambda: established() == 1, 20, "east to drop the old IKE SA")
        assert "(INITIAL_CONTACT)" in (east.dir / "log").read_text()
    else:
        assert established() == 2
        assert "INITIAL_CONTACT" not in (east.dir / "log").read_text()
