#!/usr/bin/env bash
# The nested harness: end-to-end checks of `hyperctl run --backend kvm` booting the Debian cloud kernel
# on a real /dev/kvm, on any machine.
#
# L1 is Debian's generic kernel under QEMU's TCG emulating AMD SVM (`-cpu qemu64,+svm,+npt`), with
# kvm-amd loaded, so /dev/kvm inside L1 is a real KVM driving (emulated) hardware virtualization. hyperctl
# runs there and boots L2, the guest kit's cloud kernel, as its sandbox. Timing inside means nothing;
# correctness is real. The checks themselves are in checks.sh.
#
# Usage: Tests/Nested/run.sh [--keep-log FILE]
# Ends with "N passed, M failed" and exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=Tests/Nested
log_copy=""
[ "${1:-}" = "--keep-log" ] && log_copy="${2:?--keep-log needs a file}"

say() { echo "nested: $*" >&2; }

Scripts/setup.sh
Scripts/guest-kit.sh
kit="$(Scripts/guest-kit.sh --print-dir)"
swift build -c release --product hyperctl >&2
hyperctl="$(swift build -c release --product hyperctl --show-bin-path)/hyperctl"

# L1's kernel: Debian's generic kernel, so that its release differs from the guest's cloud kernel.
cache="${HYPERCTL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hyperctl}"
mkdir -p "$cache/debs"
l1_package="$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')"
[ -n "$l1_package" ] || { say "cannot resolve linux-image-amd64"; exit 1; }
l1_deb="$(ls "$cache/debs/${l1_package}"_*.deb 2>/dev/null | head -1 || true)"
if [ -z "$l1_deb" ]; then
    say "downloading $l1_package"
    (cd "$cache/debs" && apt-get download "$l1_package" >&2 2>/dev/null) || (cd "$cache/debs" && apt-get download "$l1_package" >&2)
    l1_deb="$(ls "$cache/debs/${l1_package}"_*.deb | head -1)"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
dpkg-deb -x "$l1_deb" "$work/kernel"
release="$(ls "$work/kernel/lib/modules")"
modules="$work/kernel/lib/modules/$release"

root="$work/root"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,root,kit,modules,etc}
install -m 0755 /bin/busybox "$root/bin/busybox"
for applet in $(/bin/busybox --list-full); do [ -e "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"; done
install -m 0755 "$hyperctl" "$root/bin/hyperctl"
cp "$kit/vmlinuz" "$kit/vmlinux" "$kit/initramfs.cpio" "$kit/initramfs.cpio.lz4" "$root/kit/"
install -m 0755 "$here/checks.sh" "$root/init"
install -m 0755 "$here/echo-server.sh" "$root/bin/echo-server"

# kvm-amd and what it needs, dependencies first (from each module's modinfo section).
declare -A placed=()
add_module() {
    local name="$1" file dep
    [ -n "${placed[$name]:-}" ] && return
    file="$(find "$modules" -name "$name.ko" | head -1)"
    [ -n "$file" ] || { say "module $name is missing from $l1_package"; exit 1; }
    for dep in $(strings "$file" | sed -n 's/^depends=//p' | tr ',' ' '); do add_module "$dep"; done
    placed[$name]=1
    install -m 0644 "$file" "$root/modules/"
    echo "/modules/$(basename "$file")" >> "$root/modules/order"
}
add_module kvm-amd

# A guest that boots but never becomes ready: its /init only sleeps.
hang="$work/hang"
mkdir -p "$hang/bin"
install -m 0755 /bin/busybox "$hang/bin/busybox"
printf '#!/bin/busybox sh\n/bin/busybox sleep 100000\n' > "$hang/init"
chmod 0755 "$hang/init"
(cd "$hang" && find . | cpio --quiet -o -H newc -R 0:0) > "$root/kit/hang.cpio"

# A data disk for the virtio-blk check: ext4 made from a folder, no mount needed.
mkdir -p "$work/disk"
echo "from the disk" > "$work/disk/hello"
mke2fs -q -t ext4 -d "$work/disk" -L data "$root/kit/data.img" 8M

(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) > "$work/l1.cpio"
say "booting L1 ($release) under TCG with SVM; L2 is the guest kit's kernel ($(cat "$kit/release"))"

log="$work/l1.log"
set +e
timeout 1500 qemu-system-x86_64 -M microvm -accel tcg -cpu qemu64,+svm,+npt -m 3072 -smp 1 \
    -kernel "$work/kernel/boot/vmlinuz-$release" -initrd "$work/l1.cpio" \
    -append "console=ttyS0 reboot=t panic=-1 edd=off quiet" \
    -display none -no-reboot -nodefaults -serial stdio < /dev/null > "$log" 2>&1
qemu_status=$?
set -e
[ -n "$log_copy" ] && cp "$log" "$log_copy"

grep -E '^(PASS|FAIL|INFO) ' "$log" | tr -d '\r' || true
result="$(grep -a '^RESULT ' "$log" | tr -d '\r' | tail -1 || true)"
if [ -z "$result" ]; then
    say "L1 did not finish the checks (qemu exit $qemu_status); the end of its console:"
    tail -40 "$log" >&2
    echo "0 passed, 1 failed"
    exit 1
fi
passed="$(echo "$result" | awk '{print $2}')"
failed="$(echo "$result" | awk '{print $3}')"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
