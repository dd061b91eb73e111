"""swanctl.conf text for the road-warrior labs (mode config over PSK, IKEv2).

The strongSwan client (``vips = 0.0.0.0``: asks for an address) and the strongSwan
gateway (``pools``: hands one out) of ``test_roadwarrior.py`` and
``test_nat_many_clients.py`` differ only in which end holds the subnet and the
address pool, so one function writes both.
"""

from __future__ import annotations

from peers import EAST_ID, PROPOSALS, PSK, psk_ends


def psk_rw_swanctl(*, client_id: str, gateway: str, subnet: str, role: str,
                   pool: str = "", dns: str = "") -> str:
    """``role="client"``: a conn to ``gateway`` asking for a virtual address and
    ``subnet`` behind it, as ``client_id``; ``role="gateway"``: a conn on
    ``gateway``'s address serving ``subnet`` and leasing from ``pool`` (with
    ``dns``) to ``client_id``.  The gateway is always ``EAST_ID``."""
    p = PROPOSALS[0]
    if role == "client":
        where, local_id, remote_id, ts = (f"remote_addrs = {gateway}\n        vips = 0.0.0.0",
                                          client_id, EAST_ID, f"remote_ts = {subnet}")
        pools = ""
    elif role == "gateway":
        where, local_id, remote_id, ts = (f"local_addrs = {gateway}\n        pools = rwpool",
                                          EAST_ID, client_id, f"local_ts = {subnet}")
        pools = (f"pools {{\n    rwpool {{\n        addrs = {pool}\n"
                 f"        dns = {dns}\n    }}\n}}\n")
    else:
        raise ValueError(role)
    return f"""\
connections {{
    rw {{
        version = 2
        {where}
        proposals = {p.ss_ike}
{psk_ends(local_id, remote_id)}
        children {{
            net {{
                {ts}
                esp_proposals = {p.ss_esp}
            }}
        }}
    }}
}}
{pools}secrets {{
    ike-rw {{
        id-a = {client_id}
        id-b = {EAST_ID}
        secret = "{PSK}"
    }}
}}
"""
