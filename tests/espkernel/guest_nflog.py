"""Guest side of the NFLOG test: runs INSIDE the User-Mode-Linux kernel (ESP).

Two of our daemons (``--use-xfrm``) bring up one conn between the lab's subnets;
west has ``nflog=5``.  The rules are Libreswan's (``-m policy --pol ipsec``), and
a ping through the ESP tunnel shows up in the clear on ``tcpdump -i nflog:5``
in west's namespace, both ways.  ``whack --down`` removes the rules.

Prints ``CHECK <name>: OK`` per check; exit status 0 only if every check passed.
Started by ``tests/espkernel/test_nflog_uml.py`` through ``tools/run-in-esp-kernel.sh``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

import guestlib as G  # the lab, the daemons, check(), the clean-up

from pypluto.kernel.xfrm import XfrmBackend


def rules() -> list[str]:
    out = G.sh(["ip", "netns", "exec", G.LEFT, "iptables", "-S"])
    return [ln for ln in out.splitlines() if "NFLOG" in ln]


def legacy_iptables(work: str) -> None:
    """Debian's UML kernel has no nf_tables IPv4 family ("TABLE_ADD failed (Operation
    not supported)"), but ip_tables: ``iptables`` on PATH (ours and the daemons') is
    ``iptables-legacy`` in this guest."""
    bin_dir = os.path.join(work, "bin")
    os.makedirs(bin_dir, exist_ok=True)
    for tool in ("iptables", "ip6tables"):
        os.symlink(shutil.which(f"{tool}-legacy") or f"/usr/sbin/{tool}-legacy",
                   os.path.join(bin_dir, tool))
    os.environ["PATH"] = f"{bin_dir}:{os.environ.get('PATH', '/usr/sbin:/usr/bin')}"


def run(left: XfrmBackend, right: XfrmBackend) -> None:
    if shutil.which("tcpdump") is None or shutil.which("iptables-legacy") is None:
        G.check("nflog-tools-present", False, "tcpdump and iptables")
        return
    work = tempfile.mkdtemp(prefix="ppxg-nflog.")
    legacy_iptables(tempfile.mkdtemp(prefix="ppxg-nflog-bin."))
    conf = G.tagged_conn("nflog", "nflog", "")
    west, east = G.start_pair(work, conf.replace("\tauto=add", "\tnflog=5\n\tauto=add"),
                              conf, G.tagged_secrets(["nflog"], G.PSK))
    with G.cleaned_up((west, east), work, orderly=True):
        out = west.whack("--name", "nflog", "--initiate")
        up = G.waited(lambda: len(left.list_sas()) >= 2 and len(right.list_sas()) >= 2,
                      30, "the Child SA in both kernels")
        G.check("nflog-child-sa-up", up, out.strip()[-300:])
        r = rules()
        G.check("nflog-rules-are-libreswans",
                len(r) == 2 and all("--pol ipsec" in x and "--nflog-group 5" in x and
                                    "--nflog-prefix nflog" in x for x in r), f"{r}")
        cap = subprocess.Popen(["ip", "netns", "exec", G.LEFT, "tcpdump", "-l", "-n", "-i",
                                "nflog:5", "-c", "6"], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
        G.CHILDREN.append(cap)  # type: ignore[arg-type]
        time.sleep(1.5)  # tcpdump listening (UML starts processes slowly)
        ping = G.ping(G.LEFT, G.LIN4, G.RIN4)
        try:
            text, _ = cap.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            cap.kill()
            text, _ = cap.communicate()
        G.check("nflog-cleartext-both-ways", ping
                and f"{G.LIN4} > {G.RIN4}: ICMP echo request" in text
                and f"{G.RIN4} > {G.LIN4}: ICMP echo reply" in text, text[-400:])
        west.whack("--name", "nflog", "--down")
        G.check("nflog-rules-gone-after-down",
                G.waited(lambda: not rules(), 15, "the rules gone"), f"{rules()}")


def main() -> int:
    return G.run_guest("NFLOG", [("nflog", run)])


if __name__ == "__main__":
    sys.exit(main())
