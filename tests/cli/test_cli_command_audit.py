"""Audit of the operator commands against Libreswan 5.2: every ``whack`` option and
``ipsec`` command either does its job (proved here against a running pluto, or in the
test named in the audit table) or is refused with a clear error and a non-zero exit;
none is accepted and ignored, and no combination lets one option silently win."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from plutoproc import Pluto, run_main, wait_for
from testsupport import require

from pypluto.cli import whack as whack_mod

NOWHERE = "/nonexistent/pypluto-audit/pluto.ctl"  # a request sent here fails to connect


def whack(*args: str):  # noqa: ANN201
    return run_main("pypluto.cli.whack", list(args))


def ipsec(*args: str):  # noqa: ANN201
    return run_main("pypluto.cli.ipsec", list(args))


def refused(r, why: str) -> None:  # noqa: ANN001
    """Exit 33 with ``why`` on stderr, and no request sent (no connect attempted)."""
    assert r.returncode == 33, (r.returncode, r.stdout, r.stderr)
    assert why in r.stderr, r.stderr
    assert "is pluto running" not in r.stderr and r.stdout == ""
    assert "Pluto is not running" not in r.stderr


# --- whack: what it refuses, before any request (no pluto needed) ---------------------


# Every long option of Libreswan 5.2's whack (programs/whack/whack.c, optarg_options)
LIBRESWAN_52_WHACK = """
accept-redirect accept-redirect-to addkey addresspool addresspoolstatus aggressive
aggrmode allow-cert-without-san-id allow-narrowing asynchronous authby autheap
authenticate briefconnectionstatus briefstatus ca cat cert checkpubkeys cisco-unity
cisco_unity ckaid clearstats client clientprotoport compress conn-mark conn-mark-in
conn-mark-out connalias connectionstatus crash ctlbase ctlsocket ddns ddos-auto
ddos-busy ddos-unlimited debug debug-all debug-none decap-dscp delete delete-child
delete-ike deleteid deletestate deleteuser dns-match-id dnskeyondemand dontrekey down
down-child down-ike dpdaction dpddelay dpdtimeout drop encap-dscp encaps encapsulation
encrypt esn esp faildrop failnone failpass failreject fake-strongswan fetchcrls
fipsstatus fragmentation global-redirect global-redirect-to globalstatus groups help
host id ignore-peer-dns ike ike-socket-bufsize ike-socket-errqueue-toggle ikealg
ikefrag-allow ikefrag-force ikelifetime ikepad ikeport ikev1 ikev1-allow ikev1-natt
ikev1_natt ikev2 ikev2-allow ikev2-propose impair initialcontact initiate
initiateontraffic interface-ip interfaceip intermediate ipsec-interface ipsec-lifetime
ipsec-max-bytes ipsec-max-packets ipseclifetime iptfs iptfs-drop-time
iptfs-fragmentation iptfs-init-delay iptfs-max-queue-size iptfs-packet-size
iptfs-reorder-window ipv4 ipv6 keyid keyingtries label leave-state listall listcacerts
listcerts listcrls listen listevents listpsks listpubkeys magic metric mobike
modecfgbanner modecfgclient modecfgdns modecfgdomains modecfgpull modecfgserver
modeconfigclient modeconfigserver ms-dh-downgrade mtu name narrowing negopass nexthop
nflog-group nic-offload nm-configured nm_configured no-debug no-esn no-impair
no-nat_keepalive nopmtudisc ondemand oppodport oppohere oppoproto opposport oppothere
overlapip pass pfs pfs-rekey-workaround pfsgroup policylabel priority processstatus
pubkeyrsa purgeocsp reauth redirect-to reject rekey-child rekey-ike rekeyfuzz
rekeymargin rekeywindow remote-host remote-peer-type replay-window reqid rereadall
rereadcerts rereadcrls rereadsecrets retransmit-interval retransmit-timeout route
rundir seccomp-crashtest send-no-esp-tfc send-redirect sendca sendcert
session-resumption sha2-truncbug sha2_truncbug showstates shuntstatus shutdown sourceip
srcip statestatus status subnet suspend tcp tcp-remote-port terminate tfc to
trafficstatus transport tunnel tunnelipv4 tunnelipv6 unlisten unroute updown username
utc version vti-iface vti-interface vti-routing vti-shared vtiip xauth xauthby
xauthclient xauthfail xauthname xauthpass xauthserver xauthuser
""".split()

# those pypluto's whack takes (the audit table names the test proving each one's effect)
ACCEPTED = {
    "asynchronous", "briefstatus", "checkpubkeys", "connectionstatus", "ctlbase",
    "ctlsocket", "debug", "delete", "down", "fetchcrls", "globalstatus", "help", "initiate",
    "listcrls", "listen", "listpsks", "listpubkeys", "name", "no-debug", "ondemand",
    "purgeocsp", "redirect-to", "rekey-child", "rekey-ike", "rereadall", "rereadcerts",
    "rereadsecrets", "route", "rundir", "showstates", "shuntstatus", "shutdown",
    "statestatus", "status", "terminate", "trafficstatus", "unlisten", "unroute", "version",
}


def test_every_libreswan_52_whack_option_is_taken_or_refused() -> None:
    parser = whack_mod.build_parser()
    taken = {o for o in LIBRESWAN_52_WHACK if f"--{o}" in parser._option_string_actions}
    assert taken == ACCEPTED
    for opt in sorted(set(LIBRESWAN_52_WHACK) - taken):
        r = whack("--ctlsocket", NOWHERE, f"--{opt}", "--status")
        assert r.returncode == 33 and r.stdout == "", opt
        assert (f"--{opt} (a Libreswan whack option) is not supported by pypluto" in r.stderr
                or f"unrecognized option '--{opt}'" in r.stderr), (opt, r.stderr)


@pytest.mark.parametrize("opt", ["remote-host", "utc", "listall", "listcerts", "deleteid",
                                 "impair", "host", "xauthpass", "global-redirect", "suspend",
                                 "down-ike", "ddos-busy", "clearstats", "label"])
def test_libreswan_whack_options_pypluto_lacks_are_refused(opt: str) -> None:
    """A clear "not supported by pypluto" (before: the generic "unrecognized option")."""
    assert opt in LIBRESWAN_52_WHACK
    refused(whack("--ctlsocket", NOWHERE, f"--{opt}", "--status"),
            f"--{opt} (a Libreswan whack option) is not supported by pypluto")


@pytest.mark.parametrize("argv", [
    ["--name", "a", "--name", "b", "--delete"],
    ["--rundir", "/x", "--rundir", "/y", "--status"],
    ["--ctlbase", "/x", "--rundir", "/y", "--status"],
    ["--ctlsocket", NOWHERE, "--ctlsocket", NOWHERE + "2", "--status"],
    ["--redirect-to", "192.0.2.1", "--redirect-to", "192.0.2.2", "--name", "a"],
    ["--redirect-to", "192.0.2.1", "--peer-ip", "192.0.2.5", "--peer-ip", "192.0.2.6"],
    ["--name", "a", "--initiate", "--timeout", "3", "--timeout", "4"],
])
def test_whack_duplicated_option_is_refused(argv: list[str]) -> None:
    """Libreswan's "duplicated flag": never the last value silently winning."""
    refused(whack("--ctlsocket", NOWHERE, *argv) if "--ctlsocket" not in argv
            else whack(*argv), "duplicated option")


@pytest.mark.parametrize("argv, why", [
    (["--peer-ip", "192.0.2.1", "--status"], "--peer-ip only applies to --redirect-to"),
    (["--redirect-to", "192.0.2.9", "--name", "a", "--delete"], "cannot be combined"),
    (["--redirect-to", "192.0.2.9", "--name", "a", "--json"], "cannot be combined"),
    (["--redirect-to", "192.0.2.9", "--peer-ip", "192.0.2.1", "--listen"],
     "cannot be combined"),
    (["--name", "a", "--down", "--asynchronous"], "--asynchronous only applies to --initiate"),
    (["--name", "a", "--delete", "--timeout", "5"], "--timeout only applies to --initiate"),
    (["--name", "a", "--initiate", "--asynchronous", "--timeout", "5"],
     "conflicts with --asynchronous"),
    (["--name", "a", "--initiate", "--timeout", "-1"], "--timeout must be"),
    (["--name", "a", "--initiate", "--timeout", "nan"], "--timeout must be"),
    (["--name", "a", "--initiate", "--timeout", "inf"], "--timeout must be"),
    (["--name", "a", "--route", "--unroute"], "--route and --unroute conflict"),
    (["--name", "a", "--listen"], "no reason for --name"),
    (["--name", "a", "--status"], "no reason for --name"),
    (["--name", "a", "--briefstatus"], "no reason for --name"),
    (["--name", "a", "--shuntstatus", "--json"], "no reason for --name"),
    (["--name", "a", "--shutdown"], "no reason for --name"),
])
def test_whack_option_that_would_be_ignored_is_refused(argv: list[str], why: str) -> None:
    refused(whack("--ctlsocket", NOWHERE, *argv), why)


def test_whack_socket_path_that_is_not_a_socket(tmp_path: Path) -> None:
    """pluto not running: a regular file, a FIFO or nothing where the socket should be."""
    import os

    plain = tmp_path / "file.ctl"
    plain.write_text("not a socket")
    fifo = tmp_path / "fifo.ctl"
    os.mkfifo(fifo)
    for path in (str(plain), str(fifo), str(tmp_path / "missing.ctl")):
        r = whack("--ctlsocket", path, "--status")
        assert r.returncode == 33, (path, r)
        assert ("is pluto running?" in r.stderr if os.path.exists(path) else
                f'Pluto is not running (no "{path}")' in r.stderr), (path, r)
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    r = ipsec("up", "--ctlsocket", str(plain), "c-add")
    assert r.returncode == 33 and "is pluto running?" in r.stderr
    r = ipsec("add", "--ctlsocket", str(plain), "c-add")
    assert r.returncode == 33 and "is pluto running?" in r.stderr


# --- ipsec: what it refuses (no pluto needed) ----------------------------------------


@pytest.mark.parametrize("cmd", ["directory", "--directory", "letsencrypt", "sniff",
                                 "unbound", "nflog", "--checknflog", "--stopnflog",
                                 "--listall", "--fipsstatus", "--briefconnectionstatus",
                                 "setup", "rsasigkey", "ecdsasigkey", "algparse",
                                 "showroute", "_stackmanager", "_updown", "_plutorun"])
def test_more_unsupported_libreswan_commands_fail_clearly(cmd: str) -> None:
    r = ipsec(cmd)
    assert r.returncode == 33 and "not supported by pypluto" in r.stderr, r
    assert r.stdout == ""


@pytest.mark.parametrize("argv, why", [
    (["up", "c-add", "--remote-host", "192.0.2.1"],
     "--remote-host is not supported by pypluto"),
    (["--remote-host", "192.0.2.1", "up", "c-add"], "--remote-host is not supported"),
    (["down", "--dry-run", "c-add"], "--dry-run is not supported by pypluto"),
    (["delete", "c-add", "--frob"], 'unknown option "--frob"'),
    (["ondemand", "--asynchronous", "c-add"], 'unknown option "--asynchronous"'),
    (["add", "--verbose", "c-add"], "--verbose is not supported by pypluto"),
    (["replace", "c-add", "--checkconfig"], "--checkconfig is not supported"),
    (["stop", "--frob"], 'unknown option "--frob"'),
    (["listpubkeys", "--utc"], "--utc (a Libreswan whack option) is not supported"),
    (["listcrls", "--utc"], "--utc (a Libreswan whack option) is not supported"),
    (["rereadsecrets", "--frob"], "unrecognized option '--frob'"),
    (["listen", "c-add"], "no reason for --name"),
    (["status", "c-add"], "no reason for --name"),
    (["purgeocsp", "extra"], "no reason for --name"),
    (["trafficstatus", "a", "b"], "duplicated option --name"),
])
def test_ipsec_arguments_that_would_be_dropped_are_refused(argv: list[str], why: str) -> None:
    """Before: dropped silently (listpubkeys --utc, stop --frob, listen NAME), sent to
    pluto as a connection name (add --verbose) or refused with a misleading message."""
    r = ipsec(*argv, "--ctlsocket", NOWHERE)
    assert r.returncode == 33, (r.returncode, r.stdout, r.stderr)
    assert why in r.stderr, r.stderr
    assert "is pluto running" not in r.stderr and "Pluto is not running" not in r.stderr


def test_ipsec_stop_refuses_an_argument_instead_of_stopping(tmp_path: Path) -> None:
    r = ipsec("stop", "--rundir", str(tmp_path), "now")
    assert r.returncode == 33 and 'unknown option "now"' in r.stderr


def test_nss_commands_refuse_what_they_would_ignore(tmp_path: Path, capsys,  # noqa: ANN001
                                                    monkeypatch) -> None:  # noqa: ANN001
    from pypluto.cli import ipsec as ipsec_mod

    monkeypatch.setenv("IPSEC_CONFDDIR", "/nonexistent")
    nss = str(tmp_path / "nss")
    for argv, rc, why in (
        (["newhostkey", "--keytype", "dsa"], 1, "--keytype dsa: rsa or ecdsa"),
        (["newhostkey", "--keytype", "ecdsa", "--curve", "secp521r1"], 1,
         "--curve secp521r1 is not supported"),
        (["newhostkey", "--keytype", "ecdsa", "--bits", "521"], 1, "--bits 521 is not"),
        (["newhostkey", "--bits", "1024"], 1, "--bits 1024 is not supported"),
        (["newhostkey", "--bits", "lots"], 1, "--bits lots is not supported"),
        (["newhostkey", "--curve", "secp384r1"], 1, "--curve needs --keytype ecdsa"),
        (["newhostkey", "--seeddev", "/dev/random"], 1, "--seeddev is not supported"),
        (["newhostkey", "--bits"], 1, "--bits needs a value"),
        (["newhostkey", "--bits", "2048", "--bits", "3072"], 1, "--bits given twice"),
        (["listcerts", "--utc"], 1, "--utc is not supported by pypluto"),
        (["listcacerts", "extra"], 1, 'unexpected argument "extra"'),
        (["initnss", "--settrusts"], 1, "--settrusts is not supported"),
        (["checknss", "--json"], 1, 'unexpected argument "--json"'),
        (["certutil", "-L", "-d", "sql:/tmp"], 2, "-d is not accepted"),
    ):
        assert ipsec_mod.main([*argv, "--nssdir", nss]) == rc, argv
        err = capsys.readouterr().err
        assert why in err, (argv, err)
    assert not Path(nss).exists()  # nothing was created on the way


def test_newhostkey_curve_and_showhostkey_refusals(tmp_path: Path, capsys,  # noqa: ANN001
                                                   monkeypatch) -> None:  # noqa: ANN001
    """``--curve secp384r1`` (Libreswan's newhostkey) makes a P-384 key; before, --curve
    was ignored and a P-256 key made.  showhostkey refuses options it would ignore."""
    require(shutil.which("certutil") is not None, "libnss3-tools (certutil)")
    from cryptography.hazmat.primitives.asymmetric import ec

    from pypluto.cli import ipsec as ipsec_mod
    from pypluto.config.hostkeys import HostKeys

    monkeypatch.setenv("IPSEC_CONFDDIR", "/nonexistent")
    nss = str(tmp_path / "nss")
    assert ipsec_mod.main(["newhostkey", "--nssdir", nss, "--keytype", "ecdsa",
                           "--curve", "secp384r1"]) == 0
    keys = HostKeys(nss, None).public_keys()
    assert len(keys) == 1 and isinstance(keys[0].public, ec.EllipticCurvePublicKey)
    assert keys[0].public.curve.name == "secp384r1"
    capsys.readouterr()
    for argv, why in ((["--left", "--right"], "--left and --right conflict"),
                      (["--left", "--ipseckey"], "--ipseckey is not supported"),
                      (["--left", "--rsaid", "x"], "--rsaid is not supported"),
                      (["--list", "--left"], 'unexpected argument "--left"'),
                      (["--left", "--ckaid"], "--ckaid needs a value")):
        assert ipsec_mod.main(["showhostkey", "--nssdir", nss, *argv]) == 1, argv
        captured = capsys.readouterr()
        assert why in captured.err and "ecdsakey" not in captured.out, (argv, captured)
    assert ipsec_mod.main(["showhostkey", "--nssdir", nss, "--right"]) == 0
    assert "rightecdsakey=0s" in capsys.readouterr().out


# --- against a running pluto ---------------------------------------------------------


def _states(daemon: Pluto, *extra: str) -> list[str]:
    r = daemon.whack(*extra, "--showstates")
    assert r.returncode == 0, r
    return r.stdout.splitlines()


@pytest.mark.netns
def test_name_filters_connectionstatus_and_trafficstatus(daemon: Pluto) -> None:
    """Libreswan 5.2: ``whack --name N --connectionstatus|--trafficstatus|--showstates``
    (and ``ipsec connectionstatus N``) show that conn only; before, --name was ignored
    and every connection shown."""
    r = daemon.whack("--name", "c-add", "--connectionstatus")
    assert r.returncode == 0 and '"c-add":' in r.stdout, r
    assert '"c-route"' not in r.stdout and '"c-anyone"' not in r.stdout
    assert '"c-route":' in daemon.whack("--connectionstatus").stdout  # unfiltered
    r = daemon.whack("--name", "c-route", "--connectionstatus", "--json")
    assert [c["name"] for c in json.loads(r.stdout)["connections"]] == ["c-route"]
    r = ipsec("connectionstatus", "--rundir", str(daemon.rundir), "c-anyone")
    assert r.returncode == 0 and '"c-anyone":' in r.stdout and '"c-add"' not in r.stdout
    for cmd in ("--trafficstatus", "--connectionstatus", "--showstates"):
        r = daemon.whack("--name", "nosuch", cmd)
        assert r.returncode == 21 and 'no connection or alias named "nosuch"' in r.stdout
    r = ipsec("trafficstatus", "--rundir", str(daemon.rundir), "c-add")
    assert r.returncode == 0 and r.stderr == ""


@pytest.mark.netns
def test_asynchronous_initiate_showstates_by_name_and_down(daemon: Pluto) -> None:
    """``--initiate --asynchronous`` returns at once with the exchange started (its
    state shows); ``--name`` picks that conn's states; ``--down`` removes them."""
    t0 = time.monotonic()
    r = daemon.whack("--name", "c-add", "--initiate", "--asynchronous")
    assert r.returncode == 0, r
    assert time.monotonic() - t0 < 5
    wait_for(lambda: any('"c-add"' in ln for ln in _states(daemon)), 10, "the c-add state")
    assert all('"c-add"' in ln for ln in _states(daemon, "--name", "c-add"))
    assert _states(daemon, "--name", "c-route") == []
    r = daemon.whack("--name", "c-add", "--down")
    assert r.returncode == 0 and '"c-add": terminating SAs' in r.stdout
    assert _states(daemon) == []


@pytest.mark.netns
def test_initiate_timeout_gives_up(daemon: Pluto) -> None:
    """``--timeout 1``: the peer never answers; whack stops waiting after 1 s (51)."""
    t0 = time.monotonic()
    r = daemon.whack("--name", "c-add", "--initiate", "--timeout", "1")
    took = time.monotonic() - t0
    try:
        assert r.returncode == 51 and '"c-add": no outcome after 1s' in r.stdout, r
        assert 0.9 <= took < 10
    finally:
        daemon.whack("--name", "c-add", "--down")


@pytest.mark.netns
def test_ipsec_up_asynchronous_and_start_asynchronous(daemon: Pluto) -> None:
    """Libreswan 5.2's ``ipsec up --asynchronous NAME`` and ``ipsec start
    --asynchronous NAME`` (before: "exactly one connection name", and start went to
    the pluto start path)."""
    rd, conf = str(daemon.rundir), str(daemon.conf)
    try:
        r = ipsec("up", "--rundir", rd, "--asynchronous", "c-add")
        assert r.returncode == 0, r
        wait_for(lambda: any('"c-add"' in ln for ln in _states(daemon)), 10, "c-add")
        assert daemon.whack("--name", "c-add", "--down").returncode == 0
        r = ipsec("start", "--asynchronous", "c-later", "--rundir", rd, "--config", conf)
        assert r.returncode == 0, r
        assert '"c-later": added IKEv2 connection' in r.stdout
        wait_for(lambda: any('"c-later"' in ln for ln in _states(daemon)), 10, "c-later")
    finally:
        ipsec("delete", "--rundir", rd, "c-later")
        daemon.whack("--name", "c-add", "--down")
    assert _states(daemon) == []


@pytest.mark.netns
def test_refused_combinations_change_nothing(daemon: Pluto) -> None:
    """Before: ``--name c-route --name c-add --route`` routed c-add (last wins), and
    ``--name c-add --unlisten`` / ``--redirect-to .. --delete`` ran with the extra
    part ignored; now each is refused and pluto's state is untouched."""
    r = daemon.whack("--name", "c-route", "--name", "c-add", "--route")
    assert r.returncode == 33 and "duplicated option --name" in r.stderr
    r = daemon.whack("--name", "c-add", "--unlisten")
    assert r.returncode == 33 and "no reason for --name" in r.stderr
    r = daemon.whack("--redirect-to", "192.0.2.9", "--name", "c-add", "--delete")
    assert r.returncode == 33 and "cannot be combined" in r.stderr
    status = daemon.whack("--status").stdout
    assert "routed-ondemand" not in status and "interface lo 127.0.0.1:UDP/500" in status
    assert '"c-add":' in status
    r = ipsec("add", "--rundir", str(daemon.rundir), "--config", str(daemon.conf),
              "--verbose", "c-later")
    assert r.returncode == 33 and '"c-later":' not in daemon.whack("--status").stdout


@pytest.mark.netns
def test_libreswan_spellings_do_the_same(daemon: Pluto) -> None:
    """whack's --ctlbase, --statestatus, --ondemand, --rereadall, --rereadcerts and ipsec's
    leading options and --command aliases (Libreswan 5.2's ipsec.in) all work."""
    rd = str(daemon.rundir)
    r = whack("--ctlbase", rd, "--statestatus")
    assert r.returncode == 0 and r.stderr == ""
    assert whack("--ctlbase", rd, "--name", "c-route", "--ondemand").returncode == 0
    try:
        assert "routed-ondemand" in daemon.whack("--status").stdout
    finally:
        assert daemon.whack("--name", "c-route", "--unroute").returncode == 0
    for opt in ("--rereadall", "--rereadcerts"):
        r = daemon.whack(opt)
        assert r.returncode == 0 and "loading secrets from" in r.stdout, opt
    r = ipsec("--rundir", rd, "status")
    assert r.returncode == 0 and "Connection list:" in r.stdout
    r = ipsec("--ctlsocket", daemon.ctl, "briefstatus")
    assert r.returncode == 0 and r.stdout.startswith("State Information: DDoS cookies")
    for cmd, want in (("--shuntstatus", ""), ("--listpubkeys", None),
                      ("--checkpubkeys", None), ("--listcrls", None),
                      ("--purgeocsp", "purged 0 OCSP cache entries"), ("crls", None),
                      ("--rereadcerts", "loading secrets from"),
                      ("--rereadgroups", "listening for IKE messages")):
        r = ipsec(cmd, "--rundir", rd)
        assert r.returncode == 0, (cmd, r)
        if want:
            assert want in r.stdout, (cmd, r.stdout)
    r = ipsec("--versioncode")
    assert r.returncode == 0 and "pypluto" in r.stdout


@pytest.mark.netns
def test_rekey_without_an_sa_says_so(daemon: Pluto) -> None:
    """``--rekey-ike`` / ``--rekey-child`` on a conn with no SA: before, a silent success
    that rekeyed nothing; now pluto says so (exit 0, as Libreswan's RC_LOG line)."""
    r = daemon.whack("--name", "c-add", "--rekey-ike")
    assert r.returncode == 0
    assert '"c-add": connection does not have an established IKE SA to rekey' in r.stdout
    r = daemon.whack("--name", "c-add", "--rekey-child")
    assert r.returncode == 0
    assert '"c-add": connection does not have an established Child SA to rekey' in r.stdout


@pytest.mark.netns
def test_odd_connection_names(daemon: Pluto) -> None:
    """Names with control characters, quotes, a lone surrogate or 100,000 characters:
    an answer (21) on one escaped line, never a traceback; pluto keeps answering."""
    for name in ("bad\nname", 'quo"te', "\udcff", "x" * 100_000, "-", "%any", "c-add "):
        for cmd in ("--initiate", "--delete", "--trafficstatus"):
            r = daemon.whack("--name", name, cmd)
            assert r.returncode == 21, (name[:20], cmd, r.returncode, r.stderr)
            assert r.stdout.count("\n") == 1 and "\nname" not in r.stdout
        r = ipsec("up", "--rundir", str(daemon.rundir), name)
        assert r.returncode in (21, 33), (name[:20], r)  # 33: it looks like an option
    assert daemon.ready()


@pytest.mark.netns
def test_redirect_to_reaches_pluto(daemon: Pluto) -> None:
    """``whack --redirect-to GW --name N | --peer-ip A`` reaches pluto's engine (the
    REDIRECT itself on an established SA: tests/ike/test_redirect.py); a bad gateway or
    peer address, or an unknown name, is refused."""
    r = daemon.whack("--redirect-to", "192.0.2.9", "--name", "c-add")
    assert r.returncode == 0 and "redirecting to 192.0.2.9" in r.stdout, r
    r = daemon.whack("--redirect-to", "192.0.2.9", "--peer-ip", "192.0.2.77")
    assert r.returncode == 0 and "redirecting to 192.0.2.9" in r.stdout, r
    r = daemon.whack("--redirect-to", "192.0.2.9", "--name", "nosuch")
    assert r.returncode == 21 and 'no connection named "nosuch"' in r.stdout
    r = daemon.whack("--redirect-to", "192.0.2.9", "--peer-ip", "not-an-address")
    assert r.returncode == 33 and "redirect:" in r.stdout
    r = daemon.whack("--redirect-to", "", "--name", "c-add")
    assert r.returncode == 33 and "redirect:" in r.stdout
    assert daemon.ready()
