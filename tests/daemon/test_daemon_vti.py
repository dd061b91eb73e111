"""vti-interface= on a plane without VTI devices: refused at load, never ignored.

A VTI device keys the kernel's XFRM lookups with its marks, so only the XFRM plane
(--use-xfrm) can carry a vti conn (tests/espkernel/test_vti_uml.py).  The userspace
plane and --use-none refuse such a conn when it is loaded, with the reason in the
log; the other conns load (issue 16).
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.netns

CONF = """\
config setup
\tuniqueids=no

conn %default
\tauthby=secret
\tleft=127.0.0.1
\tleftid=@west
\tright=192.0.2.77
\trightid=@east
\tauto=add

conn plain

conn routed
\tmark=5
\tvti-interface=vti5
\tleftvti=10.9.9.1/30
"""

SECRETS = '@west @east : PSK "vti-test-psk-0123456789abcdef0123"\n'


@pytest.mark.parametrize("plane", ["userspace", "none"])
def test_planes_without_vti_refuse_vti_conns(make_pluto, tmp_path, plane):  # type: ignore[no-untyped-def]
    conf = tmp_path / "ipsec.conf"
    conf.write_text(CONF)
    secrets = tmp_path / "ipsec.secrets"
    secrets.write_text(SECRETS)
    secrets.chmod(0o600)
    p = make_pluto()
    log = p.dir / "log"
    p.start("--nofork", f"--use-{plane}", "--logfile", str(log), "--config", str(conf),
            "--secretsfile", str(secrets))
    p.wait_ready()
    status = p.whack("--status").stdout
    assert '"plain": 127.0.0.1[@west]...192.0.2.77[@east]' in status
    assert '"routed"' not in status
    why = (f"vti-interface=vti5 needs the XFRM data plane (--use-xfrm); the {plane} data "
           "plane has no VTI devices: connection refused")
    assert f'"routed": {why}' in log.read_text()
    assert p.whack("--name", "routed", "--initiate").returncode != 0
