"""Redirect (RFC 5685) in the lab: gateway A (192.0.2.2) sends the client to gateway B
(192.0.2.3, a second pypluto in the east namespace, ``--listen``), in IKE_SA_INIT
(``global-redirect=yes``) and for an established IKE SA (``whack --redirect-to``);
the client is pypluto (``accept-redirect=yes``) or strongSwan 5.9.8 (it follows
redirects by default).  The gateways use ``--use-none``: two plutos cannot share the
namespace's TUN device, and the case is about where the client lands.
"""

from __future__ import annotations

import contextlib
import pathlib
import shutil
from collections.abc import Callable

import pytest
from lab import EAST_OUTER, EAST_SUBNET, WEST_OUTER, WEST_SUBNET, Lab, require
from peers import EAST_ID, PROPOSALS, WEST_ID, Pypluto, StrongSwan, have_strongswan, swanctl_conf

pytestmark = [pytest.mark.netns, pytest.mark.interop, pytest.mark.timeout(180)]

PEER = "strongSwan 5.9.8"
GW_B = "192.0.2.3"


def _gateway(addr: str, setup: str = "") -> str:
    return f"""\
config setup
\tlisten={addr}
{setup}
conn rw
\tauthby=secret
\tleft={addr}
\tleftid=@{EAST_ID}
\tleftsubnet={EAST_SUBNET}
\tright=%any
\trightid=@{WEST_ID}
\trightsubnet={WEST_SUBNET}
\tauto=add
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


@pytest.mark.parametrize("when", ["init", "established"])
@pytest.mark.parametrize("client", ["pypluto", "strongswan"])
def test_redirect_lands_on_gateway_b(lab: Lab, cell: Callable[..., None], client: str,
                                     when: str) -> None:
    peer = PEER if client == "strongswan" else "pypluto"
    cell(peer=peer, case=f"redirect-{when}", role="responder", proposal="defaults")
    if client == "strongswan":
        require(have_strongswan(), "strongSwan 5.9.8 (charon-systemd, swanctl)")
    lab.run(lab.east, ["ip", "addr", "add", f"{GW_B}/24", "dev", "east"])
    setup = f"\tglobal-redirect=yes\n\tglobal-redirect-to={GW_B}\n" if when == "init" else ""
    a = Pypluto(lab, lab.east, "pypluto-gw-a", "--use-none").start(_gateway(EAST_OUTER, setup))
    b = Pypluto(lab, lab.east, "pypluto-gw-b", "--use-none").start(_gateway(GW_B))
    if client == "pypluto":
        c = Pypluto(lab, lab.west, "pypluto-client", "--use-none").start(CLIENT)
        if when == "init":
            c.initiate()
        else:
            c.initiate()
            lab.wait_for(lambda: a.ike_established(), 10, "IKE SA with gateway A")
            r = a.whack("--redirect-to", GW_B, "--name", "rw")
            assert r.returncode == 0, r.stdout + r.stderr
        lab.wait_for(lambda: b.child_established(), 15, "the client landed on gateway B")
        (ike,) = [i for i in c.sas() if "ESTABLISHED" in i["state"]]
        assert ike["remote"].startswith(f"{GW_B}:")
        assert "redirected by 192.0.2.2 to new gateway 192.0.2.3" in c.log.read_text()
    else:
        sw = StrongSwan(lab, lab.west, "strongswan-client").start()
        sw.load(swanctl_conf(conn="west-east", local=WEST_OUTER, remote=EAST_OUTER,
                             local_id=WEST_ID, remote_id=EAST_ID, local_ts=WEST_SUBNET,
                             remote_ts=EAST_SUBNET, proposal=PROPOSALS[0]))
        sw.initiate(check=False)
        if when == "established":
            lab.wait_for(lambda: a.ike_established(), 10, "IKE SA with gateway A")
            r = a.whack("--redirect-to", GW_B, "--name", "rw")
            assert r.returncode == 0, r.stdout + r.stderr
        lab.wait_for(lambda: b.child_established(), 20, "strongSwan landed on gateway B")
        assert "redirect" in sw.log.read_text().lower()
    lab.wait_for(lambda: not a.ike_established(), 15, "nothing left on gateway A")
    cell(note=f"{client} client sent from A to B ({when})")



def _hosts_file(ns: str, lines: str) -> Callable[[], None]:
    """``/etc/netns/NS/hosts``, which ``ip netns exec NS`` bind-mounts over /etc/hosts
    for what runs in that namespace (the machine's /etc/hosts is not touched); returns
    the function that removes it again."""
    d = pathlib.Path("/etc/netns") / ns
    made_parent = not d.parent.exists()
    d.mkdir(parents=True, exist_ok=False)
    (d / "hosts").write_text("127.0.0.1 localhost\n" + lines)

    def remove() -> None:
        shutil.rmtree(d, ignore_errors=True)
        if made_parent:
            with contextlib.suppress(OSError):
                d.parent.rmdir()

    return remove


@pytest.mark.parametrize("when", ["init", "established"])
@pytest.mark.parametrize("client", ["pypluto", "strongswan"])
def test_redirect_to_a_name_lands_on_gateway_b(lab: Lab, cell: Callable[..., None],
                                               client: str, when: str) -> None:
    """RFC 5685 §10: gateway A names B by FQDN (``global-redirect-to=`` / ``whack
    --redirect-to NAME``); the client resolves it (its namespace's hosts file) and
    lands on B.  pypluto resolves off its event loop; strongSwan 5.9.8 resolves the
    FQDN gateway identity itself."""
    peer = PEER if client == "strongswan" else "pypluto"
    cell(peer=peer, case=f"redirect-fqdn-{when}", role="responder", proposal="defaults")
    if client == "strongswan":
        require(have_strongswan(), "strongSwan 5.9.8 (charon-systemd, swanctl)")
    name = f"gw-b-{lab.west}.example".lower()
    remove = _hosts_file(lab.west, f"{GW_B} {name}\n")
    try:
        lab.run(lab.east, ["ip", "addr", "add", f"{GW_B}/24", "dev", "east"])
        setup = f"\tglobal-redirect=yes\n\tglobal-redirect-to={name}\n" \
            if when == "init" else ""
        a = Pypluto(lab, lab.east, "pypluto-gw-a", "--use-none").start(
            _gateway(EAST_OUTER, setup))
        b = Pypluto(lab, lab.east, "pypluto-gw-b", "--use-none").start(_gateway(GW_B))
        if client == "pypluto":
            c = Pypluto(lab, lab.west, "pypluto-client", "--use-none").start(
                CLIENT.replace(f"accept-redirect-to={GW_B}", f"accept-redirect-to={name}"))
            c.initiate()
        else:
            sw = StrongSwan(lab, lab.west, "strongswan-client").start()
            sw.load(swanctl_conf(conn="west-east", local=WEST_OUTER, remote=EAST_OUTER,
                                 local_id=WEST_ID, remote_id=EAST_ID, local_ts=WEST_SUBNET,
                                 remote_ts=EAST_SUBNET, proposal=PROPOSALS[0]))
            sw.initiate(check=False)
        if when == "established":
            lab.wait_for(lambda: a.ike_established(), 10, "IKE SA with gateway A")
            r = a.whack("--redirect-to", name, "--name", "rw")
            assert r.returncode == 0, r.stdout + r.stderr
        lab.wait_for(lambda: b.child_established(), 20, "the client landed on gateway B")
        lab.wait_for(lambda: not a.ike_established(), 15, "nothing left on gateway A")
        if client == "pypluto":
            (ike,) = [i for i in c.sas() if "ESTABLISHED" in i["state"]]
            assert ike["remote"].startswith(f"{GW_B}:")
            text = c.log.read_text()
            assert f"redirected to new gateway {name}: resolving the name" in text, text
            assert f"redirected by 192.0.2.2 to new gateway {name} ({GW_B})" in text, text
        else:
            assert name in sw.log.read_text(), sw.log.read_text()[-3000:]
        cell(note=f"{client} client sent from A to B by name {name} ({when})")
    finally:
        remove()
