"""Two of our daemons authenticate with raw RSA keys (issue 14), each role: each has its
own NSS database with a key made by ``certutil -G`` (west's with a password in
``<ipsecdir>/nsspassword``); one ipsec.conf names both keys as ``leftrsasigkey=`` /
``rightrsasigkey=`` in RFC 3110 form, as ``ipsec showhostkey`` prints them."""

from __future__ import annotations

import base64
import contextlib
import os
import subprocess

import pytest
from plutoproc import wait_for
from test_daemon_pair import pair  # noqa: F401 - the two-namespace fixture

from pypluto.config.hostkeys import HostKeys
from pypluto.crypto import rawkey

pytestmark = pytest.mark.netns

CONF = """\
conn west-east
\tauthby=rsasig
\tleft=192.0.2.1
\tleftid=@west
\tleftrsasigkey={west}
\tleftsubnet=198.51.100.0/24
\tright=192.0.2.2
\trightid=@east
\trightrsasigkey={east}
\trightsubnet=203.0.113.0/24
\tauto={{auto}}
"""


def _db(d, password=None):
    d.mkdir(parents=True)
    pw = ["--empty-password"]
    if password:
        (d.parent / "pw").write_text(password + "\n")
        pw = ["-f", str(d.parent / "pw")]
    (d.parent / "noise").write_bytes(os.urandom(64))
    subprocess.run(["certutil", "-N", "-d", f"sql:{d}", *pw], check=True, capture_output=True)
    subprocess.run(["certutil", "-G", "-d", f"sql:{d}", "-k", "rsa", "-g", "2048", "-z",
                    str(d.parent / "noise"), *(pw if password else [])], check=True,
                   capture_output=True)
    pub = HostKeys(str(d), password).public_keys()[0].public
    return "0s" + base64.b64encode(rawkey.rfc3110_encode(pub)).decode()


@pytest.mark.parametrize("initiator", ["west", "east"])
def test_raw_keys_between_two_daemons(pair, tmp_path, initiator):  # noqa: F811
    start, wns, ens = pair
    west_key = _db(tmp_path / "westkeys" / "nss", "west-pw")
    east_key = _db(tmp_path / "eastkeys" / "nss")
    (tmp_path / "westkeys" / "nsspassword").write_text("NSS Certificate DB:west-pw\n")
    conf = CONF.format(west=west_key, east=east_key)
    east = start("east", ens, "add", "--use-none", "--nssdir",
                 str(tmp_path / "eastkeys" / "nss"), "--ipsecdir", str(tmp_path / "eastkeys"),
                 conf_text=conf)
    west = start("west", wns, "add", "--use-none", "--nssdir",
                 str(tmp_path / "westkeys" / "nss"), "--ipsecdir", str(tmp_path / "westkeys"),
                 conf_text=conf)
    first = west if initiator == "west" else east
    r = first.whack("--name", "west-east", "--initiate")
    assert r.returncode == 0, r.stdout + first.log()
    for p, peer in ((west, "@east"), (east, "@west")):
        # the responder writes its lines after it sent its IKE_AUTH answer: the
        # initiator's whack can return first (a loaded machine), so wait for them
        with contextlib.suppress(AssertionError):  # then the assertion below says what is missing
            wait_for(lambda p=p: "authenticated peer using digital signature" in p.log(),
                     30, "the established line")
        log = p.log()
        assert "authenticated peer using digital signature RSASSA-PSS" in log, log[-2000:]
        assert "west-pw" not in log
        assert "ESTABLISHED_CHILD_SA" in p.whack("--showstates").stdout
        assert peer in p.whack("--listpubkeys").stdout
