#!/usr/bin/env bash
# Builds the default guest of the kvm backend from Debian packages, into a cache:
#   - the kernel from linux-image-cloud-amd64, taken with `apt-get download` and unpacked with `dpkg-deb -x`
#     (never installed into /boot);
#   - an initramfs with busybox-static, the virtio modules in dependency order, and hyper-agent as /init.
# It rebuilds only when an input changed (kernel package, busybox, agent binary, this script).
#
# Usage: Scripts/guest-kit.sh [--print-dir]
# The kit goes to $HYPERCTL_GUEST_KIT, else ${HYPERCTL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hyperctl}/guest,
# which is where `hyperctl run --backend kvm` looks for it.
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${HYPERCTL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hyperctl}"
kit="${HYPERCTL_GUEST_KIT:-$cache/guest}"
if [ "${1:-}" = "--print-dir" ]; then echo "$kit"; exit 0; fi

say() { echo "guest-kit: $*" >&2; }

need=()
for package in busybox-static cpio lz4; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || need+=("$package")
done
if ((${#need[@]})); then
    sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    say "installing ${need[*]}"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The agent: a static release build, stripped.
swift build -c release --product hyper-agent >&2
agent="$(swift build -c release --product hyper-agent --show-bin-path)/hyper-agent"

# The kernel package: the metapackage names the versioned image package.
mkdir -p "$cache/debs"
image_package="$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')"
if [ -z "$image_package" ]; then
    sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    image_package="$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/ {print $2; exit}')"
fi
[ -n "$image_package" ] || { say "cannot resolve linux-image-cloud-amd64 to a kernel package"; exit 1; }
deb="$(ls "$cache/debs/${image_package}"_*.deb 2>/dev/null | head -1 || true)"
if [ -z "$deb" ]; then
    say "downloading $image_package"
    (cd "$cache/debs" && apt-get download "$image_package" 2>/dev/null >&2) || (cd "$cache/debs" && apt-get download "$image_package" >&2)
    deb="$(ls "$cache/debs/${image_package}"_*.deb | head -1)"
fi

inputs="$(sha256sum "$deb" /bin/busybox "$agent" "$0" | sha256sum | cut -d' ' -f1)"
if [ -f "$kit/inputs" ] && [ "$(cat "$kit/inputs")" = "$inputs" ] && [ -f "$kit/initramfs.cpio" ]; then
    say "up to date: $kit"
    exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
dpkg-deb -x "$deb" "$work/kernel"
release="$(ls "$work/kernel/lib/modules")"
modules="$work/kernel/lib/modules/$release"

# Modules and their dependencies (from each module's own modinfo section), dependencies first.
wanted=(virtio_console virtio_blk virtio-rng)
declare -A placed=()
order=()
module_path() { find "$modules" -name "$1.ko" | head -1; }
add_module() {
    local name="$1" file dep
    [ -n "${placed[$name]:-}" ] && return
    file="$(module_path "$name")"
    [ -n "$file" ] || { say "module $name is missing from $image_package"; exit 1; }
    for dep in $(strings "$file" | sed -n 's/^depends=//p' | tr ',' ' '); do add_module "$dep"; done
    placed[$name]=1
    order+=("$file")
}
for name in virtio_mmio "${wanted[@]}"; do add_module "$name"; done

root="$work/root"
mkdir -p "$root"/{bin,sbin,etc/hyper,proc,sys,dev,tmp,run,root,mnt,usr/bin,usr/sbin,lib/modules/"$release"}
ln -s /proc/mounts "$root/etc/mtab"
install -m 0755 "$agent" "$root/init"
strip "$root/init"
install -m 0755 /bin/busybox "$root/bin/busybox"
for applet in $(/bin/busybox --list-full); do
    [ -e "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
done
: > "$root/etc/hyper/modules"
for file in "${order[@]}"; do
    install -m 0644 "$file" "$root/lib/modules/$release/"
    echo "/lib/modules/$release/$(basename "$file")" >> "$root/etc/hyper/modules"
done
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$root/etc/passwd"
printf 'root:x:0:\n' > "$root/etc/group"
echo sandbox > "$root/etc/hostname"

mkdir -p "$kit.new"
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) > "$kit.new/initramfs.cpio"
lz4 -q -l -9 -f "$kit.new/initramfs.cpio" "$kit.new/initramfs.cpio.lz4"
cp "$work/kernel/boot/vmlinuz-$release" "$kit.new/vmlinuz"
# The same kernel uncompressed: an ELF with the PVH entry note, which boots without the bzImage's
# decompressor. Its payload is LZ4 (legacy frame, magic 02 21 4C 18) after the setup code.
payload="$(grep -obUaP '\x02\x21\x4c\x18' "$kit.new/vmlinuz" | head -1 | cut -d: -f1)"
if [ -n "$payload" ]; then
    tail -c +"$((payload + 1))" "$kit.new/vmlinuz" | lz4 -dc > "$kit.new/vmlinux" 2>/dev/null || true
    [ "$(head -c 4 "$kit.new/vmlinux" | od -An -tx1 | tr -d ' ')" = "7f454c46" ] || { say "could not unpack vmlinux; the kit boots the bzImage only"; rm -f "$kit.new/vmlinux"; }
fi
echo "$release" > "$kit.new/release"
echo "$inputs" > "$kit.new/inputs"
rm -rf "$kit"
mv "$kit.new" "$kit"
say "built $kit: kernel $release, initramfs $(du -h "$kit/initramfs.cpio" | cut -f1) ($(du -h "$kit/initramfs.cpio.lz4" | cut -f1) with LZ4), modules: ${order[*]##*/}"
