"""Fixtures for the whack / ipsec tests: one pluto per test module, in its own namespace."""

from __future__ import annotations

import pathlib
import shutil
import sys
from collections.abc import Iterator

import pytest

_HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE.parent / "daemon"))

from plutoproc import NetNS, Pluto, root_conftest  # noqa: E402

_root = root_conftest()


CONF = """\
config setup
\tuniqueids=yes

conn %default
\tauthby=secret
\tleft=127.0.0.1
\tleftid=@west

conn c-add
\tright=192.0.2.77
\trightid=@east
\tauto=add

conn c-route
\tright=192.0.2.78
\tauto=add

conn c-later
\tright=192.0.2.79
\tauto=ignore

conn c-anyone
\tright=%any
\tauto=add
"""

SECRETS = '@west @east : PSK "cli-test-secret-psk-0123456789abcdef"\n'


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pluto]:
    _root.require(_root.is_root() and shutil.which("ip") is not None,
                  "root and iproute2 for network namespaces")
    tmp = tmp_path_factory.mktemp("cli")
    (tmp / "ipsec.conf").write_text(CONF)
    (tmp / "ipsec.secrets").write_text(SECRETS)
    (tmp / "ipsec.secrets").chmod(0o600)
    ns = NetNS()
    p = Pluto(ns, tmp)
    try:
        p.start("--nofork", "--use-none", "--logfile", str(p.dir / "log"), "--config",
                str(tmp / "ipsec.conf"), "--secretsfile", str(tmp / "ipsec.secrets"))
        p.wait_ready()
        p.conf = tmp / "ipsec.conf"  # type: ignore[attr-defined]
        yield p
    finally:
        p.stop()
        ns.delete()
