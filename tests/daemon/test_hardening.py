"""Issue 13 item 5: pypluto.daemon.hardening refuses or warns about files it must trust."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from testsupport import is_root, require

from pypluto.daemon.hardening import (
    HardeningError,
    check_rundir,
    check_secrets_file,
    check_startup,
)

NOBODY = 65534


@pytest.fixture(autouse=True)
def _root() -> None:
    require(is_root(), "root (the tests chown files)")


def _secrets(tmp_path: Path, mode: int, uid: int = 0, name: str = "ipsec.secrets") -> Path:
    p = tmp_path / name
    p.write_text(': PSK "x"\n')
    os.chown(p, uid, 0)
    p.chmod(mode)
    return p


def test_private_root_owned_secrets_pass(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    assert check_secrets_file(str(_secrets(tmp_path, 0o600))) == []
    assert check_secrets_file(str(tmp_path / "absent")) == []


@pytest.mark.parametrize("mode,who", [(0o640, "group"), (0o604, "others"),
                                      (0o644, "group and others")])
def test_readable_by_others_warns(tmp_path: Path, mode: int, who: str) -> None:
    p = _secrets(tmp_path, mode)
    (w,) = check_secrets_file(str(p))
    assert f'"{p}" is readable by {who}' in w and f"chmod 600 {p}" in w


def test_not_owned_by_root_warns(tmp_path: Path) -> None:
    p = _secrets(tmp_path, 0o600, uid=NOBODY)
    (w,) = check_secrets_file(str(p))
    assert f"uid {NOBODY}, not root" in w and f"chown root:root {p}" in w


@pytest.mark.parametrize("mode,who", [(0o620, "group"), (0o602, "others"),
                                      (0o666, "group and others")])
def test_writable_by_others_refused(tmp_path: Path, mode: int, who: str) -> None:
    p = _secrets(tmp_path, mode)
    with pytest.raises(HardeningError) as e:
        check_secrets_file(str(p))
    msg = str(e.value)
    assert f'secrets file "{p}" is writable by {who}' in msg
    assert "refusing to start" in msg and f"chmod go-w {p}" in msg


def test_secrets_in_a_directory_others_can_write(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    p = _secrets(d, 0o600)
    d.chmod(0o777)
    with pytest.raises(HardeningError, match=f"chmod o-w {d}"):
        check_secrets_file(str(p))
    d.chmod(0o1777)  # sticky (like /tmp): others cannot replace root's file
    assert check_secrets_file(str(p)) == []


def test_symlinked_secrets_checked_at_the_target(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    real = _secrets(tmp_path, 0o666, name="real.secrets")
    link = tmp_path / "ipsec.secrets"
    link.symlink_to(real)
    with pytest.raises(HardeningError, match="writable by group and others"):
        check_secrets_file(str(link))


def test_rundir_checks(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    run = tmp_path / "run"
    assert check_rundir(str(run)) == []  # absent: pluto creates it
    run.mkdir(mode=0o755)
    assert check_rundir(str(run)) == []
    for mode in (0o777, 0o1777, 0o757):
        run.chmod(mode)
        with pytest.raises(HardeningError) as e:
            check_rundir(str(run))
        assert f'rundir "{run}" is writable by others' in str(e.value)
        assert f"chmod o-w {run}" in str(e.value)
    run.chmod(0o775)  # group-writable: root's group, allowed
    assert check_rundir(str(run)) == []
    os.chown(run, NOBODY, NOBODY)
    (w,) = check_rundir(str(run))
    assert f"owned by uid {NOBODY}" in w and f"chown root:root {run}" in w


def test_rundir_symlinks(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    target = tmp_path / "target"
    target.mkdir(mode=0o755)
    link = tmp_path / "run"
    link.symlink_to(target)
    assert check_rundir(str(link)) == []  # root's link to a safe directory
    os.lchown(link, NOBODY, NOBODY)
    with pytest.raises(HardeningError) as e:
        check_rundir(str(link))
    assert f"symbolic link owned by uid {NOBODY}, not root" in str(e.value)
    assert str(target) in str(e.value)
    os.lchown(link, 0, 0)
    target.chmod(0o777)  # root's link, but to a directory others can write
    with pytest.raises(HardeningError, match="writable by others"):
        check_rundir(str(link))
    target.chmod(0o755)
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(HardeningError, match="dangling"):
        check_rundir(str(dangling))
    afile = tmp_path / "afile"
    afile.write_text("")
    with pytest.raises(HardeningError, match="not a directory"):
        check_rundir(str(afile))


def test_check_startup_globs_and_collects(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    d = tmp_path / "secrets.d"
    d.mkdir(mode=0o755)
    _secrets(d, 0o600, name="a.secrets")
    _secrets(d, 0o644, uid=NOBODY, name="b.secrets")
    run = tmp_path / "run"
    warnings = check_startup(str(d / "*.secrets"), str(run))
    assert len(warnings) == 2 and all("b.secrets" in w for w in warnings)
    _secrets(d, 0o666, name="c.secrets")
    with pytest.raises(HardeningError, match="c.secrets"):
        check_startup(str(d / "*.secrets"), str(run))
