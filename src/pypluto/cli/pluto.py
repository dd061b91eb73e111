"""The `pluto` command line: start-up exactly as ipsec-pluto(8) describes.

Order of events: parse the options (bad ones: message and exit 1), open the
log, create the lock file ``RUNDIR/pluto.pid`` (exit 10 if it exists), create
the control socket ``RUNDIR/pluto.ctl`` (owner-only), then either the daemon
fork (the parent writes the child's PID into the lock file and exits 0) or,
with ``--nofork``, print "Pluto initialized" and keep running in the
foreground.  The lock file and socket are removed at exit.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import signal
import socket
import sys

from pypluto.daemon.hardening import HardeningError, check_startup
from pypluto.daemon.logger import PlutoLogger
from pypluto.daemon.options import (
    EXIT_ERROR,
    EXIT_LOCKED,
    EXIT_OK,
    OptionError,
    PlutoOptions,
    parse_args,
)


def _err(msg: str) -> None:
    print(f"pluto: {msg}", file=sys.stderr)
    sys.stderr.flush()


def _open_ctl(path: str) -> socket.socket:
    from pypluto.daemon.lockfile import ctl_in_use

    if ctl_in_use(path):  # a live pluto whose lock file is gone: never take its socket
        raise FileExistsError(17, "another pluto is answering on it")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # we hold the lock: any socket left there is stale
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        s.bind(path)
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    s.listen(64)
    s.setblocking(False)
    return s


def _create_lock(o: PlutoOptions, logger: PlutoLogger) -> int:
    """Create the lock file; a stale one (its PID is no running pluto) is removed first.

    Raises FileExistsError (its strerror says why) while another pluto holds it.
    """
    from pypluto.daemon.lockfile import remove_stale

    for _ in range(2):
        try:
            return os.open(o.pidfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            state = remove_stale(o.pidfile, o.ctlsocket)
            if not state.stale:
                raise FileExistsError(17, state.reason) from None
            logger.log(f'removed stale lock file "{o.pidfile}" ({state.reason}) '
                       f'and control socket "{o.ctlsocket}"')
            from pypluto.daemon.leftovers import remove_crash_leftovers

            remove_crash_leftovers(logger.log)
    raise FileExistsError(17, "another pluto keeps creating it")


def _daemonize(pidfd: int, stderrlog: bool) -> bool:
    """The conventional daemon fork; returns True in the child."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        os.write(pidfd, f"{pid}\n".encode())
        os.close(pidfd)
        os._exit(EXIT_OK)
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    if not stderrlog:
        os.dup2(null, 2)
    os.close(null)
    return True


def run(o: PlutoOptions) -> int:
    try:
        logger = PlutoLogger(
            stderr=o.stderrlog,
            logfile=o.logfile,
            logtime=o.logtime,
            logappend=o.logappend,
            logip=o.logip,
            audit=o.audit,
            debug=o.debug,
        )
    except OSError as e:
        _err(f'cannot open logfile "{o.logfile}": {e.strerror}')
        return EXIT_ERROR
    try:  # issue 13: the secrets file and the rundir are ours alone
        for warning in check_startup(o.secretsfile, o.rundir):
            logger.log(warning, "warning")
    except HardeningError as e:
        _err(str(e))
        logger.log(f"FATAL ERROR: {e}", "error")
        return EXIT_ERROR
    try:
        os.makedirs(o.rundir, mode=0o755, exist_ok=True)
    except OSError as e:
        _err(f'cannot create rundir "{o.rundir}": {e.strerror}')
        return EXIT_ERROR
    try:
        pidfd = _create_lock(o, logger)
    except FileExistsError as e:
        msg = (f'lock file "{o.pidfile}" already exists: {e.strerror}; '
               "is another pluto running?")
        _err(msg)
        logger.log(f"FATAL ERROR: {msg}", "error")
        return EXIT_LOCKED
    except OSError as e:
        _err(f'unable to create lock file "{o.pidfile}": {e.strerror}')
        return EXIT_ERROR
    try:
        ctl = _open_ctl(o.ctlsocket)
    except FileExistsError as e:
        msg = f'control socket "{o.ctlsocket}" is in use: {e.strerror}; is another pluto running?'
        _err(msg)
        logger.log(f"FATAL ERROR: {msg}", "error")
        os.close(pidfd)
        os.unlink(o.pidfile)
        return EXIT_LOCKED
    except OSError as e:
        # "AF_UNIX path too long" (a sun_path of 108 bytes) is an OSError without errno
        _err(f'cannot create control socket "{o.ctlsocket}": {e.strerror or e}')
        os.close(pidfd)
        os.unlink(o.pidfile)
        return EXIT_ERROR
    if o.leak_detective:
        import tracemalloc

        tracemalloc.start()
    if o.nofork:
        os.write(pidfd, f"{os.getpid()}\n".encode())
        os.close(pidfd)
        try:
            print("Pluto initialized", flush=True)
        except OSError:  # stdout's reader is gone ("pluto --nofork | head -0"): run on
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)  # the line still buffered goes there at exit
            os.close(null)
    else:
        _daemonize(pidfd, o.stderrlog)
    fault_file = None
    if o.efence_protect:
        try:
            os.makedirs(o.coredir, exist_ok=True)
            fault_file = open(os.path.join(o.coredir, f"pluto-faults-{os.getpid()}.txt"), "w")  # noqa: SIM115
            faulthandler.enable(file=fault_file)
        except OSError as e:
            logger.log(f"efence-protect: cannot open fault file in {o.coredir}: {e.strerror}",
                       "warning")
    from pypluto.daemon.server import main_loop

    def early_stop(signum: int, _frame: object) -> None:
        # SIGTERM before the event loop took over the signals: exit, still cleaning up
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, early_stop)
    rc = 1
    try:
        rc = main_loop(o, logger, ctl)
    finally:
        ctl.close()
        for path in (o.ctlsocket, o.pidfile):
            with contextlib.suppress(OSError):
                os.unlink(path)
        if fault_file is not None:
            faulthandler.disable()
            fault_file.close()
            if os.path.getsize(fault_file.name) == 0:
                with contextlib.suppress(OSError):
                    os.unlink(fault_file.name)
        logger.log(f"pluto exiting with status {rc}")
        logger.close()
    return rc


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        kind, value = parse_args(args)
    except OptionError as e:
        _err(str(e))
        print("For usage information: pluto --help", file=sys.stderr)
        return EXIT_ERROR
    if kind in ("help", "version"):
        print(value)
        return EXIT_OK
    assert isinstance(value, PlutoOptions)
    return run(value)


if __name__ == "__main__":
    sys.exit(main())
