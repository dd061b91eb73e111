#!/usr/bin/env bash
# Install the system packages and peer daemons that pypluto's tests, demo and
# benchmarks need, as root.  Idempotent: a second run only checks.
#
#   tools/install-deps.sh          everything the test suite needs
#   tools/install-deps.sh --demo   only what `make demo` needs (iproute2, ping)
#
# Peers of the interop matrix (tests/interop/trixie.py picks them):
#   Debian 12 (bookworm): strongSwan 5.9.8 (packages) and Libreswan 4.10
#     (extracted, tools/install-libreswan.sh) on the host, plus strongSwan 6.0.1
#     and Libreswan 5.2 as Debian 13 chroots made by
#     ../shared/interop/trixie/install.sh (TRIXIE_ROOT, default /opt; about 95 s
#     the first time, then a 0.05 s check).
#   Debian 13 (trixie): strongSwan 6.0.1 and Libreswan 5.2 are the host's own
#     packages (Libreswan extracted beside strongSwan, as on Debian 12); 5.9.8
#     and 4.10 are not needed.  tools/try-install-deps-debian13.sh runs this script
#     on a fresh debootstrapped Debian 13 (2026-12-05: rc 0 in 37 s; charon-systemd
#     6.0.1-6+deb13u7, Libreswan 5.2 extracted, user-mode-linux, iperf3).  Debian's
#     6.0.1 has no ML-KEM plugin, so on such a host the ML-KEM cells need it built.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
codename=$( (. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}") || true)

want_demo_only=0
[ "${1:-}" = "--demo" ] && want_demo_only=1

if [ "$(id -u)" != 0 ]; then
    echo "install-deps: not root; skipping system packages (tests that need them will say so)" >&2
    exit 0
fi

have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

apt_updated=0
apt_install() {
    local missing=()
    for p in "$@"; do have_pkg "$p" || missing+=("$p"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ $apt_updated = 0 ]; then
        echo "==> apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        apt_updated=1
    fi
    echo "==> apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Lab tools: namespaces, ping, captures; iptables: the userspace plane drops inbound
# cleartext that its policies protect (kernel/userspace/inbound_filter.py).
apt_install iproute2 iputils-ping procps iptables
[ $want_demo_only = 1 ] && exit 0
apt_install tcpdump openssl kmod

# strongSwan (5.9.8 on Debian 12, 6.0.1 on Debian 13): charon-systemd with
# kernel-libipsec (in libcharon-extra-plugins).
apt_install charon-systemd strongswan-swanctl strongswan-pki \
    libcharon-extra-plugins libstrongswan-standard-plugins

if [ "$codename" = trixie ]; then
    # Libreswan 5.2 conflicts with strongswan-libcharon too: extracted the same
    # way, with Debian 13's library package names (libreswan 5.2's Depends).
    LIBRESWAN_LIBS="libnss3-tools libnss3 libnspr4 libevent-core-2.1-7t64
        libevent-pthreads-2.1-7t64 libldns3t64 libunbound8 libcap-ng0 libaudit1
        libcurl3t64-gnutls libldap2 libpam0g libselinux1 dns-root-data iptables bind9-host" \
        bash "$here/install-libreswan.sh"
else
    # Libreswan 4.10: it conflicts with strongSwan's packages, so extract it.
    bash "$here/install-libreswan.sh"
    # strongSwan 6.0.1 and Libreswan 5.2 from Debian 13 chroots (the CI clone has
    # ../shared beside the repository).
    trixie_install="$here/../../shared/interop/trixie/install.sh"
    if [ -f "$trixie_install" ]; then
        echo "==> Debian 13 peers (strongSwan 6.0.1, Libreswan 5.2): $trixie_install"
        bash "$trixie_install"
    elif [ "${CI:-}" = true ]; then
        echo "install-deps: $trixie_install is missing (CI needs ../shared)" >&2; exit 1
    else
        echo "install-deps: no ../shared/interop/trixie/install.sh: the strongSwan 6.0.1" \
             "and Libreswan 5.2 cells will be skipped" >&2
    fi
fi

# A kernel with ESP for the XFRM backend tests (User-Mode Linux), and gcc for the
# ptrace shim it runs with on hosts with a large XSAVE area (tools/run-in-esp-kernel.sh).
apt_install user-mode-linux gcc libc6-dev
# ...and the xfrm_interface module it lacks (ipsec-interface= on XFRM), built once and
# cached (tools/build-uml-xfrmi.sh; tests/espkernel/test_xfrmi_uml.py builds it too).
bash "$here/build-uml-xfrmi.sh" >/dev/null \
    || echo "install-deps: xfrm_interface.ko for UML not built: test_xfrmi_uml.py will say why" >&2

# Benchmarks: iperf3 drives the ESP throughput runs (bench/esp_throughput.py).
apt_install iperf3
