"""Parse and resolve an ipsec.conf of 1,000 conns that use ``%default`` and ``also=``.

Goal (issue 3): under 1 s.  The config layer only, which is what ``addconn``
does before talking to pluto; the daemons' own start with the same conns is
measured side by side in ``config_start``.

Run alone: ``python -m bench.config_load [N]``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

from pypluto.config.parser import load_config


def make_config(n: int) -> str:
    """N conns: each uses also= to a shared base and to a per-site template."""
    parts = [
        "config setup\n\tuniqueids=yes\n\tplutodebug=none\n",
        "conn %default\n\tikelifetime=8h\n\tipsec-lifetime=1h\n\tkeyexchange=ikev2\n"
        "\tauthby=secret\n\tdpddelay=30s\n",
        "conn base\n\tleft=192.0.2.1\n\tleftid=@gw.example\n\tleftsubnet=10.0.0.0/16\n"
        "\tike=aes_gcm256-sha2_256;dh19,aes256-sha2_256;dh14\n\tesp=aes_gcm256\n",
    ]
    for site in range(10):
        parts.append(f"conn site{site}\n\talso=base\n\trightsubnets={{172.{16 + site}.0.0/24 "
                     f"172.{16 + site}.1.0/24}}\n")
    for i in range(n):
        a, b = divmod(i, 250)
        parts.append(
            f"conn peer{i}\n\talso=site{i % 10}\n\tright=198.51.{a}.{b + 1}\n"
            f"\trightid=@peer{i}.example\n\tauto={'add' if i % 3 else 'start'}\n"
        )
    return "\n".join(parts)


def measure(n: int = 1000, repeats: int = 3) -> tuple[float, int]:
    text = make_config(n)
    fd, path = tempfile.mkstemp(suffix=".conf")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        best = float("inf")
        conns = 0
        for _ in range(repeats):
            t0 = time.perf_counter()
            cfg = load_config(path)
            best = min(best, time.perf_counter() - t0)
            if not cfg.ok:
                raise RuntimeError([str(d) for d in cfg.file_errors][:3])
            conns = sum(1 for name in cfg.conns if name.startswith("peer"))
        return best, conns
    finally:
        os.unlink(path)


def run() -> dict[str, object]:
    seconds, conns = measure(1000)
    return {
        "name": "config_load",
        "command": "python -m bench.config_load",
        "rows": [{
            "metric": f"parse+resolve {conns} conns (%default, also=)",
            "pypluto": round(seconds, 3),
            "libreswan": None,
            "unit": "s",
            "note": "best of 3; goal < 1 s: " + ("met" if seconds < 1 else "missed")
                    + "; config layer only (daemon start: config_start)",
        }],
    }


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    secs, got = measure(n)
    print(f"parse+resolve {got} conns: {secs:.3f} s (best of 3; goal < 1 s)")
