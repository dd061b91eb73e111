"""Start-up checks of the files pluto trusts (issue 13 item 5).

* The secrets file (``--secretsfile``, a glob): a warning when a file is not
  owned by root or can be read by group or others; a refusal when group or
  others can write it (they could add a PSK and impersonate any peer), and
  likewise when the directory holding it can be written by others without the
  sticky bit (they could replace the file).
* The run directory (``--rundir``, where ``pluto.ctl`` and ``pluto.pid``
  live): a refusal when it is a symbolic link not owned by root (its owner
  could point it anywhere), when it (or where it leads) is not a directory, or
  when others can write it (they could replace the control socket and
  receive every whack command, or plant the lock file); a warning when the
  directory is owned by someone else than root or pluto's own user.

Every message names the file and the fix.  Nothing here changes a file.
``check_startup`` is what pluto calls before it reads secrets or creates the
control socket; the other functions are its parts.
"""

from __future__ import annotations

import glob
import os
import stat

__all__ = ["HardeningError", "check_rundir", "check_secrets_file", "check_startup"]

ROOT_UID = 0


class HardeningError(Exception):
    """A file or directory pluto must not trust; the message says why and how to fix it."""


def _mode(st: os.stat_result) -> str:
    return f"{stat.S_IMODE(st.st_mode):04o}"


def check_secrets_file(path: str, *, owner_uid: int = ROOT_UID) -> list[str]:
    """Warnings for one secrets file; raises :class:`HardeningError` to refuse it.

    A missing file is not this function's business (pluto warns that no file
    matched and runs without secrets).
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return []
    except OSError as e:
        raise HardeningError(f'cannot check secrets file "{path}": {e.strerror}') from None
    mode = st.st_mode
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        who = " and ".join(w for w, bit in (("group", stat.S_IWGRP), ("others", stat.S_IWOTH))
                           if mode & bit)
        raise HardeningError(
            f'secrets file "{path}" is writable by {who} (mode {_mode(st)}); refusing to '
            f"start. Fix: chmod go-w {path} (better: chown root:root {path}; chmod 600 {path})")
    warnings: list[str] = []
    parent = os.path.dirname(os.path.realpath(path)) or "."
    try:
        pst = os.stat(parent)
    except OSError:
        pst = None
    if pst is not None and pst.st_mode & stat.S_IWOTH and not pst.st_mode & stat.S_ISVTX:
        raise HardeningError(
            f'secrets file "{path}" is in directory "{parent}" that others can write '
            f"(mode {_mode(pst)}), so they can replace it; refusing to start. "
            f"Fix: chmod o-w {parent}")
    if st.st_uid != owner_uid:
        warnings.append(
            f'secrets file "{path}" is owned by uid {st.st_uid}, not root; that user can '
            f"change every key. Fix: chown root:root {path}")
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        who = " and ".join(w for w, bit in (("group", stat.S_IRGRP), ("others", stat.S_IROTH))
                           if mode & bit)
        warnings.append(
            f'secrets file "{path}" is readable by {who} (mode {_mode(st)}). '
            f"Fix: chmod 600 {path}")
    return warnings


def check_rundir(path: str, *, owner_uid: int = ROOT_UID) -> list[str]:
    """Refuse an unsafe ``--rundir`` (raises :class:`HardeningError`); warnings otherwise.

    A rundir that does not exist yet is fine: pluto creates it (mode 0755).
    """
    try:
        lst = os.lstat(path)
    except FileNotFoundError:
        return []
    except OSError as e:
        raise HardeningError(f'cannot check rundir "{path}": {e.strerror}') from None
    if stat.S_ISLNK(lst.st_mode) and lst.st_uid != owner_uid:
        raise HardeningError(
            f'rundir "{path}" is a symbolic link owned by uid {lst.st_uid}, not root '
            f'(it points to "{os.readlink(path)}"); refusing to start. Fix: remove the '
            f"link and let pluto create {path}, or give --rundir a directory owned by root")
    try:
        st = os.stat(path)
    except OSError as e:
        raise HardeningError(
            f'rundir "{path}" is a dangling symbolic link ({e.strerror}); refusing to '
            f"start. Fix: remove the link") from None
    if not stat.S_ISDIR(st.st_mode):
        raise HardeningError(f'rundir "{path}" is not a directory; refusing to start. '
                             f"Fix: give --rundir a directory")
    if st.st_mode & stat.S_IWOTH:
        raise HardeningError(
            f'rundir "{path}" is writable by others (mode {_mode(st)}): they could replace '
            f"the control socket or the lock file; refusing to start. Fix: chmod o-w {path} "
            f"(pluto makes it 0755), or give --rundir a private directory")
    if st.st_uid not in (owner_uid, os.geteuid()):
        return [f'rundir "{path}" is owned by uid {st.st_uid}, who can replace the control '
                f"socket. Fix: chown root:root {path}"]
    return []


def check_startup(secretsfile: str, rundir: str, *, owner_uid: int = ROOT_UID) -> list[str]:
    """Every start-up check: the warnings to log, or :class:`HardeningError` to refuse.

    Call it after the logger is open and before the secrets are read and the
    control socket is created.
    """
    warnings = check_rundir(rundir, owner_uid=owner_uid)
    files = sorted(glob.glob(secretsfile)) if glob.has_magic(secretsfile) else [secretsfile]
    for f in files:
        warnings += check_secrets_file(f, owner_uid=owner_uid)
    return warnings
