"""mark= / mark-in= / mark-out= on a plane that cannot mark: refused, never ignored.

The XFRM plane puts XFRMA_MARK on the SAs and policies (tests/kernel/test_xfrm_marks.py,
tests/espkernel/test_mark_uml.py).  The userspace plane has no marks: a marked conn
is refused when it is loaded, with the reason in the log and on whack's output,
and the other conns load (issue 12: enforce or refuse).
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.netns

HEAD = """\
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
"""
CONF = HEAD + """
conn marked
\tmark=5

conn marked-out
\tmark-out=0x21/0xff
"""

SECRETS = '@west @east : PSK "marks-test-psk-0123456789abcdef0123"\n'
WHY = ("mark= / mark-in= / mark-out= need the XFRM data plane (--use-xfrm); the userspace "
       "data plane cannot mark SAs: connection refused")


def _userspace_pluto(make_pluto, tmp_path, text):  # type: ignore[no-untyped-def]
    """pluto --use-userspace with ``text`` as its ipsec.conf; (the process, its log)."""
    conf = tmp_path / "ipsec.conf"
    conf.write_text(text)
    secrets = tmp_path / "ipsec.secrets"
    secrets.write_text(SECRETS)
    secrets.chmod(0o600)
    p = make_pluto()
    log = p.dir / "log"
    p.start("--nofork", "--use-userspace", "--logfile", str(log), "--config", str(conf),
            "--secretsfile", str(secrets))
    p.wait_ready()
    return p, log


def test_userspace_plane_refuses_marked_conns(make_pluto, tmp_path):  # type: ignore[no-untyped-def]
    p, log = _userspace_pluto(make_pluto, tmp_path, CONF)
    status = p.whack("--status").stdout
    assert '"plain": 127.0.0.1[@west]...192.0.2.77[@east]' in status
    assert '"marked"' not in status and '"marked-out"' not in status
    text = log.read_text()
    assert f'"marked": {WHY}' in text and f'"marked-out": {WHY}' in text
    assert "using kernel interface: userspace" in text
    r = p.whack("--name", "marked", "--initiate")
    assert r.returncode != 0


XFRM_ONLY = HEAD + """
conn no-encap-dscp
\tencap-dscp=no

conn decap
\tdecap-dscp=yes

conn nopmtu
\tnopmtudisc=yes

conn encap
\tencap-dscp=yes
"""


def test_userspace_plane_refuses_xfrm_only_sa_flags(make_pluto, tmp_path):  # type: ignore[no-untyped-def]
    """decap-dscp=yes, nopmtudisc=yes and encap-dscp=yes are XFRM flags (ipsec.conf(5):
    "only implemented for the Linux XFRM stack"): the userspace plane, which copies no
    DSCP bits and keeps PMTU discovery on, refuses them; encap-dscp=no is what it does."""
    p, log = _userspace_pluto(make_pluto, tmp_path, XFRM_ONLY)
    status = p.whack("--status").stdout
    assert '"plain":' in status and '"no-encap-dscp":' in status
    text = log.read_text()
    for name, kv in (("decap", "decap-dscp=yes"), ("nopmtu", "nopmtudisc=yes"),
                     ("encap", "encap-dscp=yes")):
        assert f'"{name}"' not in status
        assert f'"{name}": {kv} needs the XFRM data plane (--use-xfrm)' in text, text[-3000:]
