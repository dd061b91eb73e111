"""pluto's command line without a running daemon: bad arguments, --help, --version.

No root needed: every case exits before the lock file or the sockets.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from plutoproc import PY, sh


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--keep-alive", "soon"], '--keep-alive "soon" is not a number'),
        (["--nhelpers", "-5"], "--nhelpers"),
        (["--listen", "not-an-ip"], "is not an IP address"),
        (["--virtual-private", "10.0.0.0/8"], "must start with %v4: or %v6:"),
        (["--use-bsdkame"], "KAME"),
        (["--use-xfrm", "--use-none"], "only one of"),
        (["--debug", "bogus"], 'unrecognized debug option "bogus"'),
        (["--crlcheckinterval", "-1"], "must not be negative"),
        (["--secctx-attr-type", "0"], "between"),
        (["--seedbits", "many"], "not a number"),
        (["--config", "/nonexistent/ipsec.conf"], "no such file"),
        (["--frobnicate"], "unrecognized option '--frobnicate'"),
        (["--logfile"], "expected one argument"),
    ],
)
def test_bad_arguments_exit_1(args, needle, capsys):
    from pypluto.cli import pluto

    assert pluto.main(["--rundir", "/nonexistent/ppd", *args]) == 1
    err = capsys.readouterr().err
    assert needle in err and err.startswith("pluto: ")


def test_bad_argument_process_exit_status():
    r = subprocess.run([PY, "-m", "pypluto.cli.pluto", "--nofork", "--keep-alive", "x"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.splitlines() == ['pluto: --keep-alive "x" is not a number',
                                     "For usage information: pluto --help"]


def test_bad_config_exit_1(tmp_path):
    bad = tmp_path / "bad.conf"
    bad.write_text("config setup\n\tfrobnicate=yes\n")
    r = subprocess.run([PY, "-m", "pypluto.cli.pluto", "--nofork", "--rundir",
                        str(tmp_path / "run"), "--config", str(bad)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and f"{bad}:2" in r.stderr and "Traceback" not in r.stderr


def test_help_version_debug_help():
    for args, needle in ((["--help"], "--secctx-attr-type"), (["--version"], "pypluto"),
                         (["--debug", "help"], "whackwatch")):
        r = subprocess.run([PY, "-m", "pypluto.cli.pluto", *args], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0 and needle in r.stdout
    r = subprocess.run([PY, "-m", "pypluto.cli.pluto", "--help"], capture_output=True,
                       text=True, timeout=60)
    text = " ".join(r.stdout.split())
    assert "--crl-strict a peer certificate needs a current CRL from its issuer" in text
    assert "--crlcheckinterval secs fetch CRLs from distribution points, refresh them every " \
        "secs (0, the default: no fetching)" in text
    assert "--nssdir d the NSS database of certificates, CAs and keys" in text


def test_unwritable_logfile_exit_1(tmp_path):
    r = subprocess.run([PY, "-m", "pypluto.cli.pluto", "--rundir", str(tmp_path / "run"),
                        "--logfile", str(tmp_path / "no" / "such" / "dir" / "log"), "--use-none",
                        "--nofork"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "cannot open logfile" in r.stderr


def test_console_scripts_exist():
    assert sh(sys.executable, "-c", "import pypluto.cli.pluto, pypluto.cli.whack, "
              "pypluto.cli.ipsec").returncode == 0


def _man_page_options() -> set[str]:
    import re

    from testsupport import shared_path

    text = shared_path("spec", "ipsec-pluto.8.txt").read_text()
    return set(re.findall(r"^\s+(--[a-z0-9-]+)", text, re.MULTILINE))


def test_every_man_page_option_works_or_is_refused():
    """Issue 12 item 7 for the command line: every option of ipsec-pluto(8) either
    works (a named test proves it) or is refused clearly; none is kept and ignored."""
    import pathlib
    import re

    from pypluto.daemon.options import OPTIONS

    man = _man_page_options()
    assert len(man) > 30 and man <= set(OPTIONS), sorted(man - set(OPTIONS))
    root = pathlib.Path(__file__).resolve().parents[2]
    missing = []
    for opt, (support, what) in OPTIONS.items():
        assert support in ("works", "default-only", "refused"), opt
        if support == "works":
            path, _, func = what.partition("::")
            f = root / path
            if not (f.is_file() and re.search(rf"^(async )?def {func}\(", f.read_text(),
                                              re.MULTILINE)):
                missing.append((opt, what))
        else:
            assert what, opt
    assert missing == []


@pytest.mark.parametrize("args, message", [
    (["--secctx-attr-type", "32002"], "--secctx-attr-type 32002 is not supported by pypluto "
                                      "(labeled IPsec"),
    (["--use-bsdkame"], "--use-bsdkame is not supported by pypluto (the BSD KAME"),
])
def test_options_without_their_feature_are_refused(args, message, capsys):
    from pypluto.cli import pluto

    assert pluto.main(["--rundir", "/nonexistent/ppd", *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"pluto: {message}"), err


def test_default_values_of_refused_options_are_accepted():
    from pypluto.daemon.options import parse_args

    kind, o = parse_args(["--nssdir", "/var/lib/ipsec/nss", "--ipsecdir", "/etc/ipsec.d/",
                          "--crlcheckinterval", "0", "--secctx-attr-type", "32001"])
    assert kind == "run"
    assert o.nssdir == "/var/lib/ipsec/nss" and o.crlcheckinterval == 0.0  # type: ignore[union-attr]
    kind, o = parse_args(["--nssdir", "/tmp/nss/", "--crl-strict"])  # issue 14: both work
    assert o.nssdir == "/tmp/nss" and o.crl_strict  # type: ignore[union-attr]
    kind, o = parse_args(["--ipsecdir", "/tmp/ipsec.d/"])  # issue 14: nsspassword lives there
    assert o.ipsecdir == "/tmp/ipsec.d"  # type: ignore[union-attr]
    kind, o = parse_args(["--crlcheckinterval", "5m"])  # issue 14: CRLs are fetched
    assert o.crlcheckinterval == 300.0  # type: ignore[union-attr]


def test_config_setup_key_pypluto_refuses_stops_pluto(tmp_path):
    """A config setup key pypluto does not support: pluto does not start, and says
    file:line and why (issue 12)."""
    conf = tmp_path / "ipsec.conf"
    conf.write_text("config setup\n\tuniqueids=yes\n\tdnssec-anchors=/etc/anchors\n")
    # --nofork, own rundir: if the key were accepted, no daemon is left behind (the
    # timeout kills it) and nothing lands in /run/pluto
    r = subprocess.run([PY, "-m", "pypluto.cli.pluto", "--nofork", "--rundir",
                        str(tmp_path / "run"), "--config", str(conf)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"pluto: {conf}:3: dnssec-anchors is not supported by pypluto (pypluto validates " \
        "no DNSSEC" in r.stderr


def test_config_setup_keys_reach_the_options(tmp_path):
    """Each config setup key that works becomes the pluto option whose effect the
    daemon tests prove (config/keywords.py names this test for them)."""
    from pypluto.daemon.options import parse_args

    conf = tmp_path / "ipsec.conf"
    conf.write_text(
        "config setup\n\tlogfile=/tmp/l.log\n\tlogtime=no\n\tlogappend=no\n\tlogip=no\n"
        "\taudit-log=no\n\tplutodebug=base\n\tdumpdir=/tmp/core\n\tsecretsfile=/tmp/s\n"
        "\tstatsbin=/bin/true\n\tuniqueids=no\n\tmyvendorid=vid\n\tlisten=192.0.2.1\n"
        "\tnhelpers=2\n\tseedbits=64\n\tkeep-alive=9\n\tvirtual-private=%v4:10.0.0.0/8\n"
        "\tprotostack=netkey\n\tddos-mode=busy\n")
    kind, o = parse_args(["--config", str(conf)])
    assert kind == "run"
    assert (o.logfile, o.logtime, o.logappend, o.logip, o.audit) == (  # type: ignore[union-attr]
        "/tmp/l.log", False, False, False, False)
    assert o.debug == {"base"} and o.coredir == "/tmp/core"  # type: ignore[union-attr]
    assert (o.secretsfile, o.statsbin, o.uniqueids, o.vendorid, o.listen) == (  # type: ignore[union-attr]
        "/tmp/s", "/bin/true", False, "vid", "192.0.2.1")
    assert (o.nhelpers, o.seedbits, o.keep_alive) == (2, 64, 9)  # type: ignore[union-attr]
    assert o.virtual_private == "%v4:10.0.0.0/8"  # type: ignore[union-attr]
    assert o.backend == "xfrm" and o.force_busy  # type: ignore[union-attr]
