#!/bin/bash
# run-in-esp-kernel.sh: run one command inside a User-Mode-Linux kernel that has
# kernel ESP (esp4/esp6, xfrm_user), with the host's / as the guest's root (hostfs).
#
#   tools/run-in-esp-kernel.sh PROGRAM [ARGS...]     argv, run as given
#   tools/run-in-esp-kernel.sh 'shell words'         one string with spaces: bash -c
#
# The command starts in the current directory with the current environment; its
# stdout/stderr are streamed here and its exit status is ours.  125 = the guest
# gave no status (boot failure, panic, timeout); the console log tail follows.
#
# Knobs: PPESPK_TIMEOUT (s, default 300), PPESPK_MEM (default 384M),
#        PPESPK_MODULES (extra modules to load), PPESPK_KEEP=1 (keep the run dir),
#        PPESPK_SHIM=0 (start UML without tools/uml-xstate-shim.c, see below).
# FPU state: UML saves its guests' FPU state with PTRACE_SETREGSET/NT_X86_XSTATE
# through a fixed-size buffer, which a host with a larger XSAVE area (AVX-512,
# AMX) refuses: UML panics as it starts init ("ptrace set fp regs failed, errno =
# 14").  On x86_64 UML runs with tools/uml-xstate-shim.c preloaded (built here
# with gcc into /var/cache/pypluto/uml/), which hands that regset over whole.
# Needs (Debian 12, as root): apt-get install user-mode-linux kmod
# Pitfall: the guest writes to the host's files as root; /run, /proc, /sys, /dev
# and /dev/shm are private to the guest (so `ip netns` names never clash).
set -u

uml=/usr/bin/linux.uml
timeout=${PPESPK_TIMEOUT:-300}
mem=${PPESPK_MEM:-384M}
modules="xfrm_user xfrm_algo esp4 esp6 ah4 ah6 xfrm4_tunnel xfrm6_tunnel tunnel4 tunnel6
ipv6 veth dummy gcm ghash_generic ctr seqiv echainiv authenc authencesn cbc hmac
sha256_generic sha512_generic chacha20poly1305 chacha_generic poly1305_generic ${PPESPK_MODULES:-}"

fail() { echo "run-in-esp-kernel: $*" >&2; exit 125; }

[ $# -ge 1 ] || { sed -n '2,16p' "$0" >&2; exit 2; }
[ -x "$uml" ] || fail "no $uml (apt-get install user-mode-linux)"
modprobe_bin=$(command -v modprobe || ls /usr/sbin/modprobe /sbin/modprobe 2>/dev/null | head -n1)
[ -n "$modprobe_bin" ] || fail "no modprobe (apt-get install kmod)"
moddir=$(find /usr/lib/uml/modules -mindepth 1 -maxdepth 1 -type d 2>/dev/null | head -n1)
[ -n "$moddir" ] || fail "no UML modules under /usr/lib/uml/modules"

preload=
if [ "$(uname -m)" = x86_64 ] && [ "${PPESPK_SHIM:-1}" != 0 ]; then
    src="$(cd "$(dirname "$0")" && pwd -P)/uml-xstate-shim.c"
    preload=/var/cache/pypluto/uml/xstate-shim.so
    if [ ! -s "$preload" ] || [ "$src" -nt "$preload" ]; then
        command -v gcc >/dev/null || fail "no gcc to build $preload (apt-get install gcc)"
        mkdir -p "${preload%/*}" && gcc -shared -fPIC -O2 -Wall -o "$preload.$$" "$src" -ldl \
            && mv "$preload.$$" "$preload" || fail "cannot build $preload from $src"
    fi
fi

run=$(mktemp -d /tmp/ppespk.XXXXXX) || fail "mktemp failed"
uml_pid=
tails=
finish() {
    if [ -n "$uml_pid" ] && kill -0 "$uml_pid" 2>/dev/null; then
        kill -KILL -- "-$uml_pid" 2>/dev/null || kill -KILL "$uml_pid" 2>/dev/null
        wait "$uml_pid" 2>/dev/null
    fi
    for t in $tails; do kill "$t" 2>/dev/null; done
    if [ "${PPESPK_KEEP:-0}" = 1 ]; then echo "run-in-esp-kernel: kept $run" >&2; else rm -rf "$run"; fi
}
trap finish EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

# The command, as a script the guest runs.
if [ $# -eq 1 ] && [[ "$1" == *" "* ]]; then
    printf '#!/bin/bash\nexec /bin/bash -c %q\n' "$1" > "$run/cmd"
else
    { printf '#!/bin/bash\nexec'; printf ' %q' "$@"; printf '\n'; } > "$run/cmd"
fi
chmod 755 "$run/cmd"
export -p | grep -vE '^declare -x (PWD|OLDPWD|SHLVL|TERM|_)=' > "$run/env"
pwd -P > "$run/cwd"
echo "$moddir" > "$run/moddir"
echo "$modprobe_bin" > "$run/modprobe"
echo $modules > "$run/modules"
: > "$run/out"; : > "$run/err"

# PID 1 of the guest.
cat > "$run/init" <<'EOF'
#!/bin/bash
R=${0%/*}
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts 2>/dev/null
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/netns /run/lock
# modules of the UML kernel: a private module root and a modprobe that uses it
mkdir -p /run/modroot/lib/modules
ln -s "$(cat "$R/moddir")" "/run/modroot/lib/modules/$(uname -r)"
printf '#!/bin/sh\nexec %s -d /run/modroot "$@"\n' "$(cat "$R/modprobe")" > /run/modprobe
chmod 755 /run/modprobe
echo /run/modprobe > /proc/sys/kernel/modprobe
/run/modprobe -a $(cat "$R/modules") 2>/dev/null || for m in $(cat "$R/modules"); do /run/modprobe "$m" 2>/dev/null; done
ip link set lo up
set -a; . "$R/env" 2>/dev/null; set +a
cd "$(cat "$R/cwd")" || cd /
"$R/cmd" </dev/null >>"$R/out" 2>>"$R/err"
echo $? > "$R/rc.new" && mv "$R/rc.new" "$R/rc"
sync
poweroff -f
EOF
chmod 755 "$run/init"

# UML keeps guest memory in a file under $TMPDIR, else /dev/shm: keep it in /dev/shm.
setsid env -u TMPDIR ${preload:+LD_PRELOAD="$preload"} "$uml" mem="$mem" rootfstype=hostfs rootflags=/ rw \
    init="$run/init" con=null ssl=null con0=fd:0,fd:1 quiet \
    </dev/null >"$run/console" 2>&1 &
uml_pid=$!
tail -s 0.2 -n +1 -f --pid="$uml_pid" "$run/out" &
tails=$!
tail -s 0.2 -n +1 -f --pid="$uml_pid" "$run/err" >&2 &
tails="$tails $!"

end=$((SECONDS + timeout))
while kill -0 "$uml_pid" 2>/dev/null; do
    if [ $SECONDS -ge $end ]; then
        echo "run-in-esp-kernel: timeout after ${timeout}s" >&2
        kill -KILL -- "-$uml_pid" 2>/dev/null || kill -KILL "$uml_pid" 2>/dev/null
        break
    fi
    sleep 0.2
done
wait "$uml_pid" 2>/dev/null
# UML's helper processes share its process group (setsid made it the leader).
kill -KILL -- "-$uml_pid" 2>/dev/null
for t in $tails; do wait "$t" 2>/dev/null; done
tails=
uml_pid=

[ -s "$run/rc" ] && exit "$(cat "$run/rc")"
echo "run-in-esp-kernel: the guest gave no exit status; console log tail:" >&2
tail -n 30 "$run/console" >&2
exit 125
