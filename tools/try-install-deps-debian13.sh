#!/usr/bin/env bash
# Run tools/install-deps.sh on a fresh Debian 13 (trixie) system, as root, and
# show what it installed: debootstraps a minimal trixie into a scratch
# directory, copies the committed tree into it and runs the script there in a
# chroot with its own mount namespace (nothing is mounted on the host).
#
#   tools/try-install-deps-debian13.sh [SCRATCH]     (default: a new /tmp dir)
#
# About 3 min for debootstrap and 40 s for install-deps; needs debootstrap and
# access to deb.debian.org.  The scratch directory is removed at the end unless
# KEEP=1.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
[ "$(id -u)" = 0 ] || { echo "root only" >&2; exit 1; }
scratch=${1:-$(mktemp -d /tmp/pypluto-deb13.XXXXXX)}
root=$scratch/root
cleanup() { [ "${KEEP:-0}" = 1 ] || rm -rf "$scratch"; }
trap cleanup EXIT
if [ ! -x "$root/usr/bin/apt-get" ]; then
    echo "==> debootstrap trixie into $root"
    debootstrap --variant=minbase --include=ca-certificates trixie "$root" \
        http://deb.debian.org/debian >"$scratch/debootstrap.log" 2>&1 \
        || { tail -20 "$scratch/debootstrap.log" >&2; exit 1; }
fi
mkdir -p "$root/repo"
git -C "$repo" archive HEAD | tar -x -C "$root/repo"
cp /etc/resolv.conf "$root/etc/resolv.conf"
unshare -m --propagation private sh -ec '
R=$1
mount -t proc proc "$R/proc"
mount --rbind /dev "$R/dev"
mount --rbind /sys "$R/sys"
chroot "$R" bash -ec "
    . /etc/os-release; echo \"==> host: \$PRETTY_NAME\"
    cd /repo && bash tools/install-deps.sh
    echo \"==> installed:\"
    dpkg-query -W charon-systemd strongswan-swanctl user-mode-linux iperf3
    /usr/libexec/ipsec/pluto --version | head -1
"' sh "$root"
