"""Redirect during IKE_AUTH (RFC 5685 §6) in the lab: gateway A (192.0.2.2, a pypluto
with ``--use-none``) authenticates the client and, by its conn's ``send-redirect=yes``
and ``redirect-to=``, answers IKE_AUTH with REDIRECT instead of a Child SA; the client
(pypluto with ``accept-redirect=yes``, or strongSwan, which follows redirects by
default) goes to gateway B (192.0.2.3, a second pypluto in the east namespace with the
userspace ESP plane) and passes traffic there.  Only B has a data plane: two plutos
cannot share the namespace's TUN device.

strongSwan 5.9.8 authenticates A, logs "redirected to 192.0.2.3" and then crashes
(``free(): double free``): its own bug, fixed in 5.9.12 by commit 595fa077b6 ("ike-sa:
Fix handling of redirects during IKE_AUTH": 5.9.8 resets the IKE_SA as for a redirect
in IKE_SA_INIT and later dereferences the freed ike-auth task).  That case is a strict
xfail; strongSwan 6.0.1 (trixie chroot) is the strongSwan client that lands on B.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from lab import (
    EAST_INNER,
    EAST_OUTER,
    EAST_SUBNET,
    WEST_INNER,
    WEST_OUTER,
    WEST_SUBNET,
    Lab,
    require,
)
from peers import EAST_ID, PROPOSALS, WEST_ID, Pypluto, swanctl_conf
from trixie import SS598, STRONGSWAN_PEERS, PeerSpec

pytestmark = [pytest.mark.netns, pytest.mark.interop, pytest.mark.timeout(180)]

GW_B = "192.0.2.3"


def _gateway(addr: str, extra: str = "") -> str:
    return f"""\
config setup
\tlisten={addr}

conn rw
\tauthby=secret
\tleft={addr}
\tleftid=@{EAST_ID}
\tleftsubnet={EAST_SUBNET}
\tright=%any
\trightid=@{WEST_ID}
\trightsubnet={WEST_SUBNET}
{extra}\tauto=add
"""


CLIENT = f"""\
conn west-east
\tauthby=secret
\tleft={WEST_OUTER}
\tleftid=@{WEST_ID}
\tleftsubnet={WEST_SUBNET}
\tright={EAST_OUTER}
\trightid=@{EAST_ID}
\trightsubnet={EAST_SUBNET}
\taccept-redirect=yes
\taccept-redirect-to={GW_B}
\tauto=add
"""


SS598_BUG = pytest.mark.xfail(strict=True, reason="strongSwan 5.9.8 crashes (double free) "
                              "when redirected during IKE_AUTH; fixed in 5.9.12 (595fa077b6)")
CLIENTS = ["pypluto"] + [pytest.param(p, id=p.label.replace(" ", ""),
                                      marks=[SS598_BUG] if p == SS598 else [])
                         for p in STRONGSWAN_PEERS]


@pytest.mark.parametrize("client", CLIENTS)
def test_redirect_in_ike_auth_lands_on_gateway_b(lab: Lab, cell: Callable[..., None],
                                                 client: str | PeerSpec) -> None:
    peer = client.label if isinstance(client, PeerSpec) else "pypluto"
    cell(peer=peer, case="redirect-ike-auth", role="responder", proposal="defaults")
    if isinstance(client, PeerSpec):
        require(client.available(), client.install_hint)
        if client == SS598:
            cell(note="strongSwan 5.9.8 follows the redirect, then crashes (double free): "
                      "its bug, fixed in 5.9.12 (595fa077b6)")
    lab.run(lab.east, ["ip", "addr", "add", f"{GW_B}/24", "dev", "east"])
    a = Pypluto(lab, lab.east, "pypluto-gw-a", "--use-none").start(
        _gateway(EAST_OUTER, f"\tsend-redirect=yes\n\tredirect-to={GW_B}\n"))
    b = Pypluto(lab, lab.east, "pypluto-gw-b").start(_gateway(GW_B))
    if not isinstance(client, PeerSpec):
        c = Pypluto(lab, lab.west, "pypluto-client").start(CLIENT)
        c.initiate()
        lab.wait_for(lambda: b.child_established() and c.child_established(), 20,
                     "the client landed on gateway B")
        (ike,) = [i for i in c.sas() if "ESTABLISHED" in i["state"]]
        assert ike["remote"].startswith(f"{GW_B}:")
        text = c.log.read_text()
        assert f"redirected by {EAST_OUTER} to new gateway {GW_B}" in text
    else:
        sw = client.strongswan(lab, lab.west, "strongswan-client").start()
        sw.load(swanctl_conf(conn="west-east", local=WEST_OUTER, remote=EAST_OUTER,
                             local_id=WEST_ID, remote_id=EAST_ID, local_ts=WEST_SUBNET,
                             remote_ts=EAST_SUBNET, proposal=PROPOSALS[0]))
        sw.initiate(check=False)
        lab.wait_for(lambda: b.child_established() and sw.installed_child() is not None, 20,
                     "strongSwan landed on gateway B")
        text = sw.log.read_text()
        assert "authentication of 'east.example' with pre-shared key successful" in text
        assert f"redirected to {GW_B}" in text, text[-3000:]
    a_log = a.log.read_text()
    assert f"to {GW_B} in IKE_AUTH (send-redirect=yes)" in a_log, a_log[-3000:]
    assert "established IKE SA" in a_log  # A authenticated the client first
    assert "established Child SA" not in a_log  # ... and gave it no Child SA
    lab.wait_for(lambda: lab.ping(lab.west, EAST_INNER, count=1, timeout=1,
                                  src=WEST_INNER)[1] == 1, 15, "a first echo through B")
    assert lab.ping(lab.west, EAST_INNER, count=3, src=WEST_INNER) == (3, 3)
    assert lab.ping(lab.east, WEST_INNER, count=3, src=EAST_INNER) == (3, 3)
    b_in, b_out = b.traffic()
    assert b_in > 0 and b_out > 0, b.trafficstatus()
    # A keeps nothing: the client deleted the IKE SA, or A dropped it after the grace
    lab.wait_for(lambda: not a.ike_established(), 20, "nothing left on gateway A")
    cell(note=f"{peer} client authenticated by A, redirected in IKE_AUTH, ping through B")
