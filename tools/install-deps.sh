#!/usr/bin/env bash
# Install the system packages and peer daemons that pypluto's tests, demo and
# benchmarks need, on Debian 12, as root.  Idempotent: a second run only checks.
#
#   tools/install-deps.sh          everything the test suite needs
#   tools/install-deps.sh --demo   only what `make demo` needs (iproute2, ping)
set -euo pipefail

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

# Lab tools: namespaces, ping, captures.
apt_install iproute2 iputils-ping procps
[ $want_demo_only = 1 ] && exit 0
apt_install tcpdump openssl kmod

# strongSwan 5.9.8: charon-systemd with kernel-libipsec (in libcharon-extra-plugins).
apt_install charon-systemd strongswan-swanctl strongswan-pki \
    libcharon-extra-plugins libstrongswan-standard-plugins

# Libreswan 4.10: it conflicts with strongSwan's packages, so extract it.
bash "$(dirname "$0")/install-libreswan.sh"

# A kernel with ESP for the XFRM backend tests (User-Mode Linux).
apt_install user-mode-linux

# Benchmarks: iperf3 drives the ESP throughput runs (bench/esp_throughput.py).
apt_install iperf3
