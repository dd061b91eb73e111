"""Guest side of the DSCP / PMTU flag test: runs INSIDE the User-Mode-Linux kernel.

Two of our daemons (``--use-xfrm``) bring up one conn between the lab's subnets,
twice: with the keys unset (Libreswan's defaults: ``encap-dscp=yes``,
``decap-dscp=no``, ``nopmtudisc=no``), then with ``encap-dscp=no``,
``decap-dscp=yes``, ``nopmtudisc=yes`` on both ends.  ``ip xfrm state`` shows the
kernel's view of the flags, and a ``ping -Q 0xb8`` (DSCP EF) shows the effect on
the wire: the ESP packets carry the inner TOS byte by default and 0 with
``encap-dscp=no``.

Prints ``CHECK <name>: OK`` per check; exit status 0 only if every check passed.
Started by ``tests/espkernel/test_dscp_uml.py`` through ``tools/run-in-esp-kernel.sh``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time

import guestlib as G  # the lab, the daemons, check(), the clean-up

from pypluto.kernel.xfrm import XfrmBackend

FLAGS = "\tencap-dscp=no\n\tdecap-dscp=yes\n\tnopmtudisc=yes\n"


def outer_tos(extra: str, tag: str, left: XfrmBackend, right: XfrmBackend) -> None:
    work = tempfile.mkdtemp(prefix="ppxg-dscp.")
    conf = G.tagged_conn("dscp", tag, extra)
    west = east = None
    try:
        west, east = G.start_pair(work, conf, conf, G.tagged_secrets([tag], G.PSK))
        with G.cleaned_up((west, east), work, orderly=True):
            out = west.whack("--name", "dscp", "--initiate")
            up = G.waited(lambda: len(left.list_sas()) >= 2 and len(right.list_sas()) >= 2,
                          30, "the Child SA in both kernels")
            G.check(f"{tag}-child-sa-up", up, out.strip()[-300:])
            state = G.sh(["ip", "-n", G.LEFT, "xfrm", "state"])
            flags = re.findall(r"flag [^\n]*", state)
            extra_flags = re.findall(r"extra_flag [^\n]*", state)
            # (this iproute2 prints no extra_flag line: encap-dscp=no shows in the TOS
            # of the ESP packets below)
            if extra:
                ok = (len(flags) == 2 and all("decap-dscp" in f and "nopmtudisc" in f
                                              for f in flags)
                      and all("dont-encap-dscp" in f for f in extra_flags))
            else:
                ok = not any("decap-dscp" in f or "nopmtudisc" in f for f in flags) \
                    and not extra_flags
            G.check(f"{tag}-ip-xfrm-state-flags", ok, f"{flags} {extra_flags}")
            dev = f"vl{G.PID}"
            cap = subprocess.Popen(["ip", "netns", "exec", G.LEFT, "tcpdump", "-l", "-n",
                                    "-v", "-i", dev, "-c", "3", "esp and src host "
                                    f"{G.L4}"], stdout=subprocess.PIPE,
                                   stderr=subprocess.DEVNULL, text=True)
            G.CHILDREN.append(cap)  # type: ignore[arg-type]
            time.sleep(1.5)  # tcpdump listening (UML starts processes slowly)
            res = subprocess.run(["ip", "netns", "exec", G.LEFT, "ping", "-c", "3", "-i",
                                  "0.3", "-W", "2", "-Q", "0xb8", "-I", G.LIN4, G.RIN4],
                                 capture_output=True, text=True)
            try:
                text, _ = cap.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                cap.kill()
                text, _ = cap.communicate()
            tos = re.findall(r"tos (0x[0-9a-f]+)", text)
            want = "0x0" if extra else "0xb8"
            G.check(f"{tag}-outer-tos-{want}", res.returncode == 0 and len(tos) == 3
                    and set(tos) == {want}, f"ping rc {res.returncode}; tos {tos}")
    finally:
        for d in (west, east):
            if d is not None:
                d.kill()


def run(left: XfrmBackend, right: XfrmBackend) -> None:
    if shutil.which("tcpdump") is None:
        G.check("dscp-tcpdump-present", False, "tcpdump (package tcpdump)")
        return
    outer_tos("", "dscp-default", left, right)
    outer_tos(FLAGS, "dscp-flags", left, right)


def main() -> int:
    return G.run_guest("DSCP", [("dscp", run)])


if __name__ == "__main__":
    sys.exit(main())
