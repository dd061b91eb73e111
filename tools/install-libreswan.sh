#!/usr/bin/env bash
# Put Debian's Libreswan 4.10 beside strongSwan for the interop tests.
#
# The libreswan package conflicts with strongSwan's, so it is downloaded and
# unpacked into $PREFIX (default /opt/libreswan) instead of installed, its
# shared-library dependencies come from apt, and /usr/libexec/ipsec points into
# the unpacked tree (Libreswan's pluto runs /usr/libexec/ipsec/addconn, a path
# compiled into it).  Safe to run again: it then only checks.
set -euo pipefail

PREFIX=${PREFIX:-/opt/libreswan}
# Debian 12's names; tools/install-deps.sh passes Debian 13's in LIBRESWAN_LIBS.
LIBS=${LIBRESWAN_LIBS:-"libnss3-tools libnss3 libnspr4 libevent-core-2.1-7 libevent-pthreads-2.1-7 libldns3
      libunbound8 libcap-ng0 libaudit1 libcurl3-nss libldap-2.5-0 dns-root-data iptables"}

[ "$(id -u)" = 0 ] || { echo "install-libreswan: must run as root" >&2; exit 1; }
ok() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

if ok libreswan; then exit 0; fi   # the real package is installed: use it

need=()
for p in $LIBS; do ok "$p" || need+=("$p"); done
if [ ${#need[@]} -gt 0 ]; then
    echo "==> apt-get install ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 || {
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }
fi

if [ ! -x "$PREFIX/usr/libexec/ipsec/pluto" ]; then
    tmp=$(mktemp -d); chmod 755 "$tmp"
    trap 'rm -rf "$tmp"' EXIT
    echo "==> downloading and unpacking libreswan into $PREFIX"
    ( cd "$tmp" && { apt-get download libreswan >/dev/null 2>&1 || {
        apt-get update -qq && apt-get download libreswan >/dev/null; }; } )
    mkdir -p "$PREFIX"
    dpkg -x "$tmp"/libreswan_*.deb "$PREFIX"
fi

target="$PREFIX/usr/libexec/ipsec"
if [ -L /usr/libexec/ipsec ]; then
    [ "$(readlink /usr/libexec/ipsec)" = "$target" ] || {
        echo "install-libreswan: /usr/libexec/ipsec points elsewhere; leaving it alone" >&2; exit 1; }
elif [ -e /usr/libexec/ipsec ]; then
    echo "install-libreswan: /usr/libexec/ipsec is a real directory; leaving it alone" >&2; exit 1
else
    mkdir -p /usr/libexec && ln -s "$target" /usr/libexec/ipsec
fi

if ldd "$target/pluto" | grep -q "not found"; then
    ldd "$target/pluto" | grep "not found" >&2
    echo "install-libreswan: pluto has unresolved libraries" >&2; exit 1
fi
