#!/usr/bin/env bash
# build-uml-xfrmi.sh: build the xfrm_interface module (XFRM interfaces, `ip link add
# ipsecN type xfrm`) for Debian's User-Mode-Linux kernel, which ships without it
# (CONFIG_XFRM_INTERFACE is not set in /usr/share/doc/user-mode-linux/config.gz).
#
#   tools/build-uml-xfrmi.sh            build if needed; print the .ko's path
#   tools/build-uml-xfrmi.sh --check    print the path if built, else exit 1
#
# How: the UML package records the kernel source it was built from (Built-Using:
# linux (= 6.1.176-1)); we `apt-get download` exactly that linux-source-6.1, extract
# only the build system, headers, arch/um, arch/x86 and net/xfrm, configure with the
# package's own config plus CONFIG_XFRM_INTERFACE=m, `make ARCH=um modules_prepare`,
# and build net/xfrm/xfrm_interface_core.c as an external module.  CONFIG_MODVERSIONS
# and CONFIG_MODULE_SIG are off in that config, so a matching vermagic
# ("6.1.176 mod_unload") is all insmod checks.  Headers of another stable release are
# NOT good enough: with 6.1.192's headers the module loads but `ip link add type xfrm`
# panics the guest (struct net_device differs), so a wrong source version is refused.
# Before caching, every undefined symbol of the module is checked against the UML
# kernel's export table and the shipped modules' modules.symbols.
#
# Cache: $PYPLUTO_UML_CACHE (default /var/cache/pypluto/uml)/<kernel version>/.
# Idempotent (a second run only checks), serialised by flock; about a minute on 2 cores.
# Needs root (apt-get), gcc, make, flex, bison, bc, xz-utils (installed if missing).
set -euo pipefail

cache_root=${PYPLUTO_UML_CACHE:-/var/cache/pypluto/uml}
moddir=$(find /usr/lib/uml/modules -mindepth 1 -maxdepth 1 -type d 2>/dev/null | head -n1)
uml=/usr/bin/linux.uml
config_gz=/usr/share/doc/user-mode-linux/config.gz

die() { echo "build-uml-xfrmi: $*" >&2; exit 1; }

[ -n "$moddir" ] && [ -x "$uml" ] || die "no User-Mode Linux (apt-get install user-mode-linux kmod)"
kver=${moddir##*/}
out_dir=$cache_root/$kver
ko=$out_dir/xfrm_interface.ko
shipped_magic=$(modinfo -F vermagic "$moddir/kernel/net/xfrm/xfrm_user.ko" 2>/dev/null) \
    || die "cannot read the vermagic of $moddir/kernel/net/xfrm/xfrm_user.ko (kmod?)"

is_good() { [ -s "$ko" ] && [ "$(modinfo -F vermagic "$ko" 2>/dev/null)" = "$shipped_magic" ]; }

# A UML package that ships the module already (a later Debian's): nothing to build.
shipped=$(find "$moddir" -name xfrm_interface.ko 2>/dev/null | head -n1)
if [ -n "$shipped" ]; then echo "$shipped"; exit 0; fi

if [ "${1:-}" = "--check" ]; then
    is_good && { echo "$ko"; exit 0; }
    exit 1
fi
if is_good; then echo "$ko"; exit 0; fi

[ "$(id -u)" = 0 ] || die "not root: cannot install the kernel source (run as root)"
mkdir -p "$out_dir"
exec 9>"$out_dir/.lock"
flock 9
if is_good; then echo "$ko"; exit 0; fi

# Build tools.
missing=()
for pair in gcc:gcc make:make flex:flex bison:bison bc:bc xz:xz-utils objcopy:binutils; do
    command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "build-uml-xfrmi: apt-get install ${missing[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
        || { DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
             DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } \
        || die "cannot install ${missing[*]}"
fi

# The exact kernel source the UML package was built from.
built_using=$(dpkg-query -W -f='${Built-Using}' user-mode-linux 2>/dev/null || true)
src_ver=$(sed -n 's/.*linux (= \([^)]*\)).*/\1/p' <<<"$built_using")
[ -n "$src_ver" ] || die "user-mode-linux does not say which linux source it was built from (Built-Using: '$built_using')"
[ "${src_ver%%-*}" = "$kver" ] || die "Built-Using says linux $src_ver but the modules are for $kver"
series=$(cut -d. -f1,2 <<<"$src_ver")  # 6.1: package linux-source-6.1
src_pkg=linux-source-$series

work=$(mktemp -d "$out_dir/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"
echo "build-uml-xfrmi: apt-get download $src_pkg=$src_ver" >&2
if ! apt-get download "$src_pkg=$src_ver" >apt.log 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 || true
    apt-get download "$src_pkg=$src_ver" >apt.log 2>&1 \
        || die "apt-get download $src_pkg=$src_ver failed (no other version will do): $(tail -n2 apt.log)"
fi
deb=$(ls "${src_pkg}"_*_all.deb)
echo "build-uml-xfrmi: extracting the build system, headers and net/xfrm" >&2
t=$src_pkg
dpkg-deb --fsys-tarfile "$deb" | tar -xO "./usr/src/$t.tar.xz" | xz -dc | tar -x --wildcards \
    "$t/Makefile" '*/Kconfig*' '*Makefile*' '*/Kbuild*' "$t/scripts" "$t/include" \
    "$t/arch/um" "$t/arch/x86" "$t/net/xfrm" "$t/kernel/bounds.c" \
    "$t/kernel/time/timeconst.bc" "$t/tools" "$t/security/selinux/include"
rm -f "$deb"
src=$work/$t
grep -q "^SUBLEVEL = ${kver##*.}\$" "$src/Makefile" || die "the source's SUBLEVEL is not ${kver##*.}"

cd "$src"
zcat "$config_gz" > .config
scripts/config --file .config -m XFRM_INTERFACE -d LOCALVERSION_AUTO
make -s ARCH=um olddefconfig >"$work/config.log" 2>&1 || die "olddefconfig failed: $(tail -n5 "$work/config.log")"
grep -q '^CONFIG_XFRM_INTERFACE=m$' .config || die "CONFIG_XFRM_INTERFACE=m did not stick"
grep -q '^# CONFIG_MODVERSIONS is not set$' .config || die "CONFIG_MODVERSIONS is on: symbol CRCs would be needed"
echo "build-uml-xfrmi: make ARCH=um modules_prepare" >&2
make -s ARCH=um -j"$(nproc)" modules_prepare >"$work/prepare.log" 2>&1 \
    || die "modules_prepare failed: $(tail -n10 "$work/prepare.log")"
[ "$(cat include/config/kernel.release)" = "$kver" ] || die "kernel.release is $(cat include/config/kernel.release), not $kver"

ext=$work/ext
mkdir -p "$ext"
cp net/xfrm/xfrm_interface_core.c "$ext/"
printf 'obj-m := xfrm_interface.o\nxfrm_interface-y := xfrm_interface_core.o\n' > "$ext/Kbuild"
echo "build-uml-xfrmi: building xfrm_interface.ko" >&2
# No Module.symvers for the prebuilt kernel: modpost only warns about the (resolved
# below) symbols it cannot see.
make ARCH=um M="$ext" KBUILD_MODPOST_WARN=1 modules >"$work/module.log" 2>&1 \
    || die "module build failed: $(grep -m5 -E 'error|Error' "$work/module.log")"
[ "$(modinfo -F vermagic "$ext/xfrm_interface.ko")" = "$shipped_magic" ] \
    || die "vermagic '$(modinfo -F vermagic "$ext/xfrm_interface.ko")' != shipped '$shipped_magic'"

# Every undefined symbol must be exported by the UML kernel (names in
# __ksymtab_strings; the linker shares string tails, so a suffix match on a
# NUL-terminated name is what counts) or by one of the shipped modules.
objcopy -O binary --only-section=__ksymtab_strings "$uml" "$work/ksyms.bin"
tr '\0' '\n' < "$work/ksyms.bin" > "$work/ksyms.txt"
unresolved=()
for sym in $(nm -u "$ext/xfrm_interface.ko" | awk '{print $2}'); do
    grep -q -- "${sym}\$" "$work/ksyms.txt" && continue
    grep -q -- " symbol:${sym} " "$moddir/modules.symbols" && continue
    unresolved+=("$sym")
done
[ ${#unresolved[@]} -eq 0 ] || die "symbols the UML kernel does not export: ${unresolved[*]}"

install -m 0644 "$ext/xfrm_interface.ko" "$ko.new"
mv -f "$ko.new" "$ko"
echo "build-uml-xfrmi: built $ko ($src_ver, vermagic '$shipped_magic')" >&2
echo "$ko"
