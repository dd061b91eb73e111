"""pluto's command line, "enforce or refuse, never ignore" (ipsec-pluto(8) of Libreswan 5.2).

Two halves:

* malformed or contradictory command lines (a value option given twice, a value
  missing or empty, --stderrlog with --logfile, nan/inf durations, a Vendor ID that
  cannot go on the wire, config setup numbers outside their option's range) end in
  one ``pluto: ...`` line and exit status 1, never a traceback and never a silent
  choice;
* the options whose effect no other test showed through the daemon (--coredir apart
  from --rundir, --efence-protect, --crl-strict, --crlcheckinterval) are shown to
  do what the man page says.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from inproc import ScriptedEngine, free_port, make_env, until
from inproc import start as _start
from plutoproc import PY, alive, wait_for

from pypluto.daemon.options import (
    MAX_VENDORID,
    PlutoOptions,
    _Once,
    build_parser,
    parse_args,
)


def _main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from pypluto.cli import pluto

    # a run dir that cannot be made, even by root (/dev/null is no directory): a command
    # line wrongly accepted still stops there, before any lock file, socket or fork
    head = [] if any(a.startswith("--rundir") for a in args) \
        else ["--rundir", "/dev/null/ppd-audit"]
    rc = pluto.main([*head, *args])
    return rc, capsys.readouterr().err


def _refused(args: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> str:
    rc, err = _main(args, capsys)
    assert rc == 1, (args, err)
    first = err.splitlines()[0]
    assert first.startswith("pluto: ") and needle in first, (args, err)
    assert "Traceback" not in err
    return first


# ------------------------------------------------------------------ malformed input

_VALUE_OPTIONS = sorted(o for act in build_parser()._actions if isinstance(act, _Once)
                        for o in act.option_strings)


def test_every_option_with_a_value_is_guarded_against_repetition():
    """Every option that takes a value (except the lists --debug / --no-debug) is a
    _Once: the table of tests below covers all of them, not a hand-picked few."""
    p = build_parser()
    takes_value = {o for act in p._actions if act.option_strings and act.nargs is None
                   and act.const is None for o in act.option_strings}
    takes_value -= {"--help", "--version"}
    assert takes_value - {"--debug", "--no-debug"} == set(_VALUE_OPTIONS)
    assert len(_VALUE_OPTIONS) == 19  # 18 options, --dumpdir the alias of --coredir


@pytest.mark.parametrize("opt", _VALUE_OPTIONS + ["--debug", "--no-debug"])
def test_missing_argument_is_refused(opt, capsys):
    _refused([opt], "expected one argument", capsys)
    # also when the next word is another option
    _refused([opt, "--nofork"], "expected one argument", capsys)


@pytest.mark.parametrize("opt", _VALUE_OPTIONS)
def test_value_option_given_twice_is_refused(opt, capsys):
    """Before: argparse kept the last value, so ``--listen A --listen B`` listened on B
    alone and ``--config a.conf --config b.conf`` read b.conf alone, silently."""
    one, two = "/dev/null/ppd-audit/1", "/dev/null/ppd-audit/2"
    first = _refused([opt, one, opt, two], "was already given", capsys)
    assert first.startswith(f'pluto: duplicated option {opt} "{two}": ')
    assert first.endswith(f'was already given ("{one}"); give it once')


def test_coredir_and_its_dumpdir_alias_together_are_refused(capsys):
    first = _refused(["--rundir", "/dev/null/ppd-audit", "--coredir", "/dev/null/a",
                      "--dumpdir", "/dev/null/b"], "already given", capsys)
    assert first == ('pluto: duplicated option --dumpdir "/dev/null/b": --coredir / '
                     '--dumpdir was already given ("/dev/null/a"); give it once')


def test_flags_and_debug_lists_may_repeat():
    kind, o = parse_args(["--nofork", "--nofork", "--uniqueids", "--uniqueids",
                          "--debug", "base", "--debug", "crypt", "--no-debug", "crypt"])
    assert kind == "run" and isinstance(o, PlutoOptions)
    assert o.nofork and o.debug == {"base"}


@pytest.mark.parametrize("args, needle", [
    (["--logfile", ""], "--logfile needs a value"),
    (["--logfile="], "--logfile needs a value"),
    (["--config", ""], "--config needs a value"),
    (["--config", "  "], "--config needs a value"),
    (["--virtual-private", ""], "--virtual-private needs a value"),
    (["--debug", ""], "--debug needs a debug class"),
    (["--no-debug", " "], "--no-debug needs a debug class"),
])
def test_empty_values_are_refused(args, needle, capsys):
    """Before: ``--logfile ""`` logged to syslog, ``--config ""`` read no config file,
    ``--virtual-private ""`` turned it off, ``--debug ""`` did nothing - all silently."""
    _refused(args, needle, capsys)


def test_stderrlog_and_logfile_together_are_refused(capsys, tmp_path):
    """Before: --logfile silently won over --stderrlog (whatever their order)."""
    for args in (["--stderrlog", "--logfile", "/tmp/x.log"],
                 ["--logfile", "/tmp/x.log", "--stderrlog"]):
        _refused(args, "--stderrlog and --logfile conflict", capsys)
    # config setup logfile= and --stderrlog: the command line wins, as documented
    conf = tmp_path / "ipsec.conf"
    conf.write_text("config setup\n\tlogfile=/tmp/from-config.log\n")
    kind, o = parse_args(["--config", str(conf), "--stderrlog"])
    assert isinstance(o, PlutoOptions) and o.stderrlog and o.logfile is None


@pytest.mark.parametrize("value, needle", [
    ("nan", "is not a duration"),
    ("NaN", "is not a duration"),
    ("inf", "is too large"),
    ("1e400", "is too large"),
    ("4000d", "is too large"),
    ("5x", "is not a duration"),
    ("", "is not a duration"),
    ("-1", "must not be negative"),
])
def test_crlcheckinterval_bad_durations(value, needle, capsys):
    """Before: float() took "nan" (nan > 0 is False: fetching silently off) and "inf"
    (a refresh timer that never fires, logged as on)."""
    _refused(["--crlcheckinterval", value], f'--crlcheckinterval "{value}" {needle}', capsys)


def test_crlcheckinterval_good_durations():
    for value, want in (("0", 0.0), ("90", 90.0), ("5m", 300.0), ("1h", 3600.0),
                        ("3650d", 3650 * 86400.0)):
        kind, o = parse_args(["--crlcheckinterval", value])
        assert isinstance(o, PlutoOptions) and o.crlcheckinterval == want


@pytest.mark.parametrize("args, needle", [
    (["--keep-alive", "0"], "between 1 and 86400"),
    (["--keep-alive", "86401"], "between 1 and 86400"),
    (["--keep-alive", "-3"], "between 1 and 86400"),
    (["--keep-alive", "20s"], "is not a number"),
    (["--nhelpers", "1001"], "between -1 and 1000"),
    (["--nhelpers", "-2"], "between -1 and 1000"),
    (["--nhelpers", "two"], "is not a number"),
    (["--seedbits", "-1"], "between 0 and 1048576"),
    (["--seedbits", "1048577"], "between 0 and 1048576"),
    (["--seedbits", "1.5"], "is not a number"),
    (["--secctx-attr-type", "65536"], "between 1 and 65535"),
    (["--secctx-attr-type", "x"], "is not a number"),
    (["--ikeport", "0"], "between 1 and 65535"),
    (["--ikeport", "65536"], "between 1 and 65535"),
    (["--natikeport", "port"], "is not a number"),
    (["--listen", "192.0.2.300"], "is not an IP address"),
    (["--listen", "192.0.2.0/24"], "is not an IP address"),
    (["--virtual-private", "%v4:10.0.0.0/33"], "--virtual-private:"),
    (["--rundir", ""], "--rundir needs a directory"),
    (["--secretsfile", ""], "--secretsfile needs a value"),
    (["--coredir", ""], "--coredir needs a value"),
    (["--statsbin", ""], "--statsbin needs a value"),
    (["--vendorid", ""], "--vendorid needs a value"),
    (["--nofork=yes"], "ignored explicit argument 'yes'"),
    (["stray"], "unexpected argument 'stray'"),
    (["--no-such-option"], "unrecognized option '--no-such-option'"),
    (["--listen-tcp"], "unrecognized option '--listen-tcp'"),
    (["--use-none", "--use-userspace"], "only one of"),
])
def test_malformed_values_exit_1(args, needle, capsys):
    _refused(args, needle, capsys)


def test_malformed_values_from_a_real_process_have_no_traceback(tmp_path):
    run = str(tmp_path / "run")
    # were a line accepted after all: free ports on loopback, a timeout, no fork
    ike, natt = free_port(), free_port()
    while natt == ike:
        natt = free_port()
    ports = ["--ikeport", str(ike), "--natikeport", str(natt)]
    for args, line in (
        (["--listen", "192.0.2.1", "--listen", "192.0.2.2", *ports],
         'pluto: duplicated option --listen "192.0.2.2": --listen was already given '
         '("192.0.2.1"); give it once'),
        (["--stderrlog", "--logfile", str(tmp_path / "l"), "--listen", "127.0.0.1", *ports],
         "pluto: --stderrlog and --logfile conflict: log to standard error or to a file, "
         "not both"),
        (["--crlcheckinterval", "nan", "--listen", "127.0.0.1", *ports],
         'pluto: --crlcheckinterval "nan" is not a duration (e.g. 300, 5m, 1h)'),
    ):
        r = subprocess.run([PY, "-m", "pypluto.cli.pluto", "--nofork", "--use-none",
                            "--rundir", run, *args], capture_output=True, text=True,
                           timeout=20)
        assert r.returncode == 1 and r.stderr.splitlines() == [
            line, "For usage information: pluto --help"], r.stderr
        assert not os.path.exists(run)  # refused before the lock file


def test_vendorid_that_cannot_go_on_the_wire_is_refused(capsys, tmp_path):
    """Before: a --vendorid of bytes that are no UTF-8 (argv decoded with
    surrogateescape) started pluto and raised UnicodeEncodeError building the engine
    (a crash report, exit 1 after the fork); one over 65531 bytes started and every
    send-vendorid=yes conn then failed with "payload 43 ... is too long", and one of
    a few KB made every IKE_SA_INIT (never fragmented, RFC 7383 §2.5) an IP-fragmented
    datagram beyond RFC 7296's 3000 bytes."""
    _refused(["--vendorid", "pypluto-\udcff"], "--vendorid: the Vendor ID is not valid UTF-8",
             capsys)
    _refused(["--vendorid", "v" * (MAX_VENDORID + 1)],
             f"--vendorid: the Vendor ID is {MAX_VENDORID + 1} bytes; at most {MAX_VENDORID}",
             capsys)
    kind, o = parse_args(["--vendorid", "v" * MAX_VENDORID])
    assert isinstance(o, PlutoOptions) and o.vendorid == "v" * MAX_VENDORID
    kind, o = parse_args(["--vendorid", "pypluto-\u00e9t\u00e9"])  # UTF-8 text is fine
    assert isinstance(o, PlutoOptions) and o.vendorid == "pypluto-\u00e9t\u00e9"
    conf = tmp_path / "ipsec.conf"
    conf.write_text(f"config setup\n\tmyvendorid={'w' * 70000}\n")
    first = _refused(["--config", str(conf)], "myvendorid: the Vendor ID is 70000 bytes",
                     capsys)
    assert first.startswith(f"pluto: {conf}:2: myvendorid: "), first


@pytest.mark.parametrize("line, needle", [
    # (Libreswan 5.2 reads nhelpers= as a decimal: a multiplier is no number at all)
    ("nhelpers=1MiB", "nhelpers=1MiB: expected a number"),
    ("nhelpers=1001", "nhelpers=1001: must be between -1 and 1000"),
    ("seedbits=2147483647", "seedbits=2147483647: must be between 0 and 1048576"),
    ("keep-alive=0", "keep-alive=0: must be between 1 and 86400 seconds"),
    ("keep-alive=500ms", "keep-alive=500ms: must be between 1 and 86400 seconds"),
    ("keep-alive=2d", "keep-alive=2d: must be between 1 and 86400 seconds"),
])
def test_config_setup_numbers_are_held_to_their_options_range(line, needle, tmp_path, capsys):
    """Before: nhelpers=1MiB made a helper pool of up to 1,048,576 threads, seedbits= read up
    to 256 MiB from /dev/random, keep-alive=500ms became 0 (no NAT keep-alives at
    all) - where the same values on the command line are refused."""
    conf = tmp_path / "ipsec.conf"
    conf.write_text(f"config setup\n\tuniqueids=yes\n\t{line}\n")
    first = _refused(["--config", str(conf)], needle, capsys)
    assert first.startswith(f"pluto: {conf}:3: "), first


def test_config_setup_numbers_in_range_are_taken(tmp_path):
    """Also nhelpers=-1, the man page's "perform the above calculation" (CPUs - 1):
    before, the config parser refused it ("expected a number"), though the code that
    applies the value handled -1 and --nhelpers -1 worked."""
    conf = tmp_path / "ipsec.conf"
    conf.write_text("config setup\n\tnhelpers=-1\n\tseedbits=1048576\n\tkeep-alive=1m\n")
    kind, o = parse_args(["--config", str(conf)])
    assert isinstance(o, PlutoOptions)
    assert (o.nhelpers, o.seedbits, o.keep_alive) == (-1, 1048576, 60)


# ------------------------------------------------------------------ effects


def test_coredir_apart_from_rundir_gets_the_crash_reports(tmp_path: Path) -> None:
    """--coredir: crash reports of internal errors go there, not to the run dir."""
    env = make_env(tmp_path, nhelpers=0)
    core = tmp_path / "core"  # not there yet: made on the first report
    env["opts"].coredir = str(core)

    async def body() -> None:
        d, eng, peer = await _start(env, ScriptedEngine)
        eng.raise_on = b"BOOM"
        peer.sendto(b"BOOM", ("127.0.0.1", env["opts"].ikeport))
        await until(lambda: core.is_dir() and any(
            p.name.startswith("pluto-crash-") for p in core.iterdir()))
        await d.shutdown()
        peer.close()

    asyncio.run(body())
    env["log"].close()
    reports = [p for p in core.iterdir() if p.name.startswith("pluto-crash-")]
    assert len(reports) == 1 and "scripted engine failure" in reports[0].read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("pluto-crash-")]
    log = (tmp_path / "log").read_text()
    assert f"core dump dir: {core}" in log and f"crash report written to {reports[0]}" in log


def test_coredir_follows_rundir_unless_given(tmp_path):
    kind, o = parse_args(["--rundir", str(tmp_path / "r")])
    assert isinstance(o, PlutoOptions) and o.coredir == str(tmp_path / "r")
    kind, o = parse_args(["--rundir", str(tmp_path / "r"), "--coredir", str(tmp_path / "c")])
    assert isinstance(o, PlutoOptions) and o.coredir == str(tmp_path / "c")
    conf = tmp_path / "ipsec.conf"
    conf.write_text(f"config setup\n\tdumpdir={tmp_path / 'd'}\n")
    kind, o = parse_args(["--config", str(conf), "--rundir", str(tmp_path / "r")])
    assert isinstance(o, PlutoOptions) and o.coredir == str(tmp_path / "d")


def test_crl_strict_reaches_the_certificate_store(tmp_path: Path) -> None:
    """--crl-strict: the certificate store the engine validates with is strict (the
    engine's refusal without a CRL is tests/ike/test_certs.py::
    test_crl_strict_without_a_crl_refuses), and the start-up log says so."""
    for strict in (True, False):
        sub = tmp_path / str(strict)
        sub.mkdir()
        env = make_env(sub, nhelpers=0)
        env["opts"].crl_strict = strict

        async def body(env: dict[str, Any] = env, strict: bool = strict) -> None:
            d, eng, peer = await _start(env, ScriptedEngine)
            assert eng.secrets.certs is d.secrets.certs
            assert d.secrets.certs.crl_strict is strict
            await d.shutdown()
            peer.close()

        asyncio.run(body())
        env["log"].close()
        log = (env["tmp"] / "log").read_text()
        assert ("crl-strict=yes: a peer certificate needs a current CRL" in log) is strict


def test_crlcheckinterval_runs_the_refresh_loop(tmp_path: Path) -> None:
    """--crlcheckinterval N: every N seconds the CRLs that are due are fetched; 0 (the
    default) fetches nothing."""
    for interval in (0.05, 0.0):
        sub = tmp_path / f"i{interval}"
        sub.mkdir()
        env = make_env(sub, nhelpers=0)
        env["opts"].crlcheckinterval = interval
        checks: list[float] = []

        async def body(env: dict[str, Any] = env, interval: float = interval,
                       checks: list[float] = checks) -> None:
            d, eng, peer = await _start(env, ScriptedEngine)
            rev = d.secrets.certs.revocation
            assert rev.policy.crlcheckinterval == interval

            def due(now: float) -> list[Any]:
                checks.append(now)
                return []

            rev.due = due  # type: ignore[method-assign]
            if interval:
                await until(lambda: len(checks) >= 3)
            else:
                await asyncio.sleep(0.3)
            await d.shutdown()
            peer.close()

        asyncio.run(body())
        env["log"].close()
        log = (sub / "log").read_text()
        if interval:
            assert len(checks) >= 3 and "CRL fetching on: refreshing every 0.05s" in log
        else:
            assert checks == [] and "CRL fetching on" not in log


def test_efence_protect_turns_on_asyncio_debug_mode(tmp_path: Path) -> None:
    for on in (True, False):
        sub = tmp_path / str(on)
        sub.mkdir()
        env = make_env(sub, nhelpers=0)
        env["opts"].efence_protect = on

        async def body(env: dict[str, Any] = env, on: bool = on) -> None:
            d, eng, peer = await _start(env, ScriptedEngine)
            assert asyncio.get_running_loop().get_debug() is on
            await d.shutdown()
            peer.close()

        asyncio.run(body())
        env["log"].close()
        log = (sub / "log").read_text()
        assert ("efence-protect enabled" in log) is on


def _start_without_core(p: Any, *args: str) -> subprocess.Popen[bytes]:
    """Pluto.start with RLIMIT_CORE 0: SIGABRT must not drop a core file anywhere."""
    import resource

    def no_core() -> None:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    with open(p.out, "wb") as o, open(p.err, "wb") as e:
        proc = subprocess.Popen(p.argv(*args), stdout=o, stderr=e, stdin=subprocess.DEVNULL,
                                preexec_fn=no_core, cwd=str(p.dir))
    p.proc = proc
    p.pids.add(proc.pid)
    return proc


@pytest.mark.netns
def test_efence_protect_fault_handler_writes_into_coredir(make_pluto):
    """--efence-protect (the nearest Python equivalent of guard pages): a fatal signal
    leaves the Python traceback of every thread in COREDIR/pluto-faults-PID.txt; without
    it nothing is written there."""
    results = {}
    for on in (True, False):
        p = make_pluto(f"efence-{on}")
        core = p.dir / "core"
        args = ["--nofork", "--use-none", "--logfile", str(p.dir / "log"), "--coredir",
                str(core)] + (["--efence-protect"] if on else [])
        proc = _start_without_core(p, *args)
        p.wait_ready()
        fault = core / f"pluto-faults-{proc.pid}.txt"
        assert fault.exists() is on  # opened at start, removed at a clean exit if empty
        os.kill(proc.pid, signal.SIGABRT)
        assert proc.wait(timeout=30) == -signal.SIGABRT
        wait_for(lambda pid=proc.pid: not alive(pid), 10, "pluto to die")
        results[on] = (fault.read_text() if fault.exists() else None,
                       sorted(x.name for x in core.iterdir()) if core.exists() else [])
    text, _ = results[True]
    assert text is not None and "Fatal Python error: Aborted" in text, text
    assert 'File "' in text and "Current thread" in text
    assert results[False] == (None, [])


def test_rundir_too_long_for_the_control_socket_says_why(tmp_path, capsys):
    """A --rundir whose pluto.ctl does not fit in sun_path (108 bytes): before, the
    error ended in ": None" (that OSError has no errno); the lock file is removed."""
    from pypluto.cli import pluto

    rundir = tmp_path / ("r" * 110)
    rc = pluto.main(["--nofork", "--use-none", "--rundir", str(rundir), "--logfile",
                     str(tmp_path / "log"), "--secretsfile", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert rc == 1 and err == (f'pluto: cannot create control socket "{rundir}/pluto.ctl": '
                               "AF_UNIX path too long\n"), err
    assert not (rundir / "pluto.pid").exists()


def test_keep_alive_is_the_nat_keepalive_interval():
    """--keep-alive N: the value reaches the engine (tests/daemon/test_daemon_inprocess.py::
    test_command_line_reaches_engine_settings) and there it is the interval of the NAT-T
    keepalives (RFC 3948 §2.3) the end behind the NAT sends: 7 s gives 6 in 45 s where
    the default 20 s gives 2."""
    from ike.harness import Net

    from pypluto.ike.settings import EngineSettings

    kind, o = parse_args(["--keep-alive", "7"])
    assert isinstance(o, PlutoOptions)
    counts = {}
    for ka in (float(o.keep_alive), 20.0):
        net = Net(nat=True, east_kw={"left": "%any"}, west_settings=EngineSettings(keep_alive=ka))
        net.up()
        assert net.established(net.west) and net.established(net.east)
        net.advance(45)
        counts[ka] = (net.west.keepalives, net.east.keepalives)
    assert counts == {7.0: (6, 0), 20.0: (2, 0)}
