"""The head of ``whack --status`` in Libreswan 5.2's layout, with pypluto's values.

Libreswan 5.2 starts ``--status`` with the kernel interface, the IKE sockets,
FIPS/SELinux/seccomp, its ``config setup`` options, NAT-T, virtual-private and
the algorithm tables.  Tools that read that block find the same lines here, in
the same order, with the same keys (``tests/daemon/test_status_libreswan52.py``
compares them with 5.2's own output).  The values are pypluto's own:

* no IKEv1: ``v1id=-1, v1name=n/a`` on every IKE cipher line;
* no DNS (``dnssec-enable=no``, ``dnssec-rootkey-file=<unset>``), no SELinux
  labels and no seccomp filter (``SElinux=disabled``, ``seccomp=unsupported``);
* the kernel algorithm table is what the running backend can install
  (``kernel/xfrm/algorithms.py`` for XFRM, the userspace plane's ESP for
  ``--use-userspace``, nothing for ``--use-none``).

Left out: Libreswan's ``stats db_ops`` line (its internal allocator) and the
key of a feature pypluto refuses at load (``ikebuf``): a refused key has no value
to show.  pypluto's own lines (pid,
uptime, helpers, the DoS defence) follow the Libreswan block.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pypluto.control.libreswan_totals import ESP_ENCR, ESP_INTEG
from pypluto.crypto import registry as reg
from pypluto.iana import TransformType

BLANK = " "  # Libreswan 5.2 separates the blocks with a line holding one space

_ESP_NAME = dict(ESP_ENCR)
_INTEG_NAME = dict(ESP_INTEG)
_PRF_NAME = {"PRF_AES128_XCBC": "AES_XCBC", "PRF_AES128_CMAC": "AES_CMAC"}


def _yn(v: object) -> str:
    return "yes" if v else "no"


def _unset(v: object) -> str:
    return "<unset>" if v in (None, "", []) else str(v)


def _interfaces(ifaces: Iterable[dict[str, Any]]) -> list[str]:
    """``interface lo [::1]:UDP/4500 (NAT)``: by name, IPv6 first, the NAT port first."""
    def key(i: dict[str, Any]) -> tuple[str, int, int]:
        return (i["ifname"], 0 if ":" in i["addr"] else 1, 0 if i.get("natt") else 1)

    out = []
    for i in sorted(ifaces, key=key):
        a = f"[{i['addr']}]" if ":" in i["addr"] else i["addr"]
        out.append(f"interface {i['ifname']} {a}:UDP/{i['port']}"
                   + (" (NAT)" if i.get("natt") else ""))
    return out


def kernel_algorithm_lines(encr_ids: Iterable[int], integ_ids: Iterable[int]) -> list[str]:
    """5.2's "Kernel algorithms supported" lines for the ESP transforms a backend installs."""
    enc: list[tuple[str, str]] = []
    for i in encr_ids:
        alg = reg.get(TransformType.ENCR, i)
        name = _ESP_NAME.get(i)
        if alg is None or name is None:
            continue
        bits = alg.key_bits or ((alg.key_size * 8,) if alg.key_size else (0,))
        enc.append((name, f"algorithm ESP encrypt: name={name}, keysizemin={min(bits)}, "
                          f"keysizemax={max(bits)}"))
    auth: list[tuple[str, str]] = []
    for i in integ_ids:
        alg = reg.get(TransformType.INTEG, i)
        name = _INTEG_NAME.get(i)
        if alg is None or name is None:
            continue
        auth.append((name, f"algorithm AH/ESP auth: name={name}, key-length={alg.key_size * 8}"))
    return [ln for _, ln in sorted(enc)] + [ln for _, ln in sorted(auth)]


def ike_algorithm_lines() -> list[str]:
    """5.2's "IKE algorithms supported" lines for what pypluto negotiates in IKEv2
    (``blocksize`` is the cipher's block, 16 for AES, Camellia and ChaCha20, as 5.2 has it)."""
    lines = []
    for a in reg.algorithms(TransformType.ENCR):
        if not a.ike_ok:
            continue
        deflen = a.default_key_bits or (a.key_bits[0] if a.key_bits else a.key_size * 8)
        lines.append(f"algorithm IKE encrypt: v1id=-1, v1name=n/a, v2id={a.id}, "
                     f"v2name={a.iana_name}, blocksize={8 if a.block_size == 8 else 16}, "
                     f"keydeflen={deflen}")
    for a in reg.algorithms(TransformType.PRF):
        name = _PRF_NAME.get(a.iana_name, a.iana_name.removeprefix("PRF_"))
        lines.append(f"algorithm IKE PRF: name={name}, hashlen={a.output_size}")
    for a in reg.algorithms(TransformType.KE):
        if not a.id:
            continue
        name = f"DH{a.id}" if a.ke_kind in ("ecp", "ecx") else a.iana_name
        lines.append(f"algorithm IKE DH Key Exchange: name={name}, bits={a.ke_size * 8}")
    return lines


def header_lines(snap: dict[str, Any]) -> list[str]:
    p = snap["pluto"]
    s = p.get("setup", {})
    dos = snap["engine"].get("dos") or {}
    lines = [f"using kernel interface: {p.get('backend')}", BLANK]
    lines += _interfaces(p.get("interfaces") or []) or ["not listening for IKE messages (use --listen)"]
    vp = p.get("virtual_private")
    lines += [
        BLANK,
        "fips mode=disabled;",
        "SElinux=disabled",
        "seccomp=unsupported",
        BLANK,
        "config setup options:",
        BLANK,
        f"configdir={s.get('configdir', '/etc')}, configfile={_unset(s.get('configfile'))}, "
        f"secrets={p.get('secretsfile')}, ipsecdir={p.get('ipsecdir')}",
        f"nssdir={p.get('nssdir')}, dumpdir={s.get('dumpdir', '')}, "
        f"statsbin={_unset(s.get('statsbin')).replace('<unset>', 'unset')}",
        "dnssec-rootkey-file=<unset>, dnssec-trusted=<unset>",
        f"sbindir={s.get('sbindir', '')}, libexecdir={s.get('libexecdir', '')}",
        f"pluto_version={p.get('version')}, pluto_vendorid={p.get('vendorid') or 'OE-pypluto'}",
        f"nhelpers={s.get('nhelpers', -1)}, uniqueids={_yn(p.get('uniqueids'))}, dnssec-enable=no"
        + (f", shuntlifetime={s['shuntlifetime']:g}s" if "shuntlifetime" in s else "")
        + (f", xfrmlifetime={s['xfrmlifetime']}s" if "xfrmlifetime" in s else ""),
        f"logfile='{s.get('logfile', '<stderr>')}', logappend={_yn(s.get('logappend', True))}, "
        f"logip={_yn(s.get('logip', True))}, audit-log={_yn(s.get('audit', True))}",
        f"ddos-cookies-threshold={dos.get('ddos_ike_threshold', 0)}, "
        f"ddos-max-halfopen={dos.get('max_halfopen_ike', 0)}, "
        f"ddos-mode={dos.get('mode', 'auto')}, ikev1-policy=drop",
        f"msg_errqueue=yes, crl-strict={_yn(p.get('crl_strict'))}, "
        f"crlcheckinterval={p.get('crlcheckinterval') or 0:g}, "
        f"listen={_unset(s.get('listen')).replace('<unset>', '<any>')}, "
        f"nflog-all={s.get('nflog_all') or 0}",
        f"ocsp-enable={_yn(s.get('ocsp_enable'))}, ocsp-strict={_yn(s.get('ocsp_strict'))}, "
        f"ocsp-timeout={s.get('ocsp_timeout', 2):g}, ocsp-uri={_unset(s.get('ocsp_uri'))}",
        f"ocsp-trust-name={_unset(s.get('ocsp_trust_name'))}",
        f"ocsp-cache-size={s.get('ocsp_cache_size', 1000)}, "
        f"ocsp-cache-min-age={s.get('ocsp_cache_min_age', 3600):g}, "
        f"ocsp-cache-max-age={s.get('ocsp_cache_max_age', 86400):g}, "
        f"ocsp-method={s.get('ocsp_method', 'get')}",
        f"global-redirect={s.get('global_redirect', 'no')}, "
        f"global-redirect-to={_unset(s.get('global_redirect_to'))}",
        "debug:" + "".join(f" {d}" for d in p.get("debug") or []),
        BLANK,
        f"nat-traversal: keep-alive={p.get('keep_alive')}, nat-ikeport={s.get('natikeport', 4500)}",
        "virtual-private (%priv):",
        *([f"- allowed subnets: {vp}"] if vp else []),
        BLANK,
        "Kernel algorithms supported:",
        BLANK,
        *kernel_algorithm_lines(*p.get("kernel_algorithms", ([], []))),
        BLANK,
        "IKE algorithms supported:",
        BLANK,
        *ike_algorithm_lines(),
        BLANK,
    ]
    return lines
