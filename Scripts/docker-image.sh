#!/usr/bin/env bash
# Builds the Docker flavour of the kvm guest: a read-only ext4 root image with Debian's docker.io,
# containerd, runc, docker-compose, iproute2, kmod and ca-certificates on a minbase (Priority: required)
# system, plus the guest kernel's modules and their depmod index. The guest kit's initramfs and agent
# boot it: the agent mounts it under a writable overlay kept on a per-sandbox scratch disk.
#
# No root-only step: packages are resolved by apt against an empty package database, fetched with
# `apt-get download`, unpacked with `dpkg-deb --fsys-tarfile | tar`, and the image is made by `mke2fs -d`.
# Maintainer scripts do not run; what they would do that the guest needs is done here (accounts, the CA
# bundle, alternatives). It rebuilds only when an input changed (the package set and versions, the
# kernel package, this script).
#
# Usage: Scripts/docker-image.sh [--print-path]
# The image goes to $HYPERCTL_DOCKER_IMAGE, else ${HYPERCTL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hyperctl}/docker/root.img,
# which is where `hyperctl run --backend kvm --docker` looks for it.
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${HYPERCTL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hyperctl}"
image="${HYPERCTL_DOCKER_IMAGE:-$cache/docker/root.img}"
if [ "${1:-}" = "--print-path" ]; then echo "$image"; exit 0; fi

say() { echo "docker-image: $*" >&2; }
sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"

need=()
for package in e2fsprogs kmod binutils; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || need+=("$package")
done
if ((${#need[@]})) || [ -z "$(apt-cache policy docker.io 2>/dev/null | awk '/Candidate:/ {print $2}')" ]; then
    say "updating the package lists${need[*]:+ and installing ${need[*]}}"
    $sudo_cmd apt-get update -qq
    ((${#need[@]})) && DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The guest kit's kernel package: the image carries its modules.
Scripts/guest-kit.sh >&2
kit="$(Scripts/guest-kit.sh --print-dir)"
release="$(cat "$kit/release")"
kernel_deb="$(ls "$cache"/debs/linux-image-"$release"_*.deb | head -1)"

# The package set: minbase plus what a Docker host needs, resolved against an empty dpkg database.
wanted=(docker.io containerd runc tini iproute2 kmod ca-certificates iptables docker-compose procps)
mapfile -t required < <(apt-cache dumpavail | awk '/^Package:/ {name = $2} /^Priority: required/ {print name}' | sort -u)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
: > "$work/status"
say "resolving ${#required[@]} required packages and ${wanted[*]}"
apt-get -o Dir::State::status="$work/status" -o Debug::NoLocking=1 -o APT::Install-Recommends=false \
    --print-uris -qq install "${required[@]}" "${wanted[@]}" > "$work/uris"
mapfile -t files < <(awk '{print $2}' "$work/uris" | sort)
((${#files[@]} > 50)) || { say "apt resolved only ${#files[@]} packages; is the package list current (apt-get update)?"; exit 1; }

inputs="$( (printf '%s\n' "${files[@]}"; sha256sum "$kernel_deb" "$0") | sha256sum | cut -d' ' -f1)"
if [ -f "$image" ] && [ -f "$image.inputs" ] && [ "$(cat "$image.inputs")" = "$inputs" ]; then
    say "up to date: $image"
    exit 0
fi

debs="$cache/debs/docker"
mkdir -p "$debs"
missing=()
for file in "${files[@]}"; do [ -f "$debs/$file" ] || missing+=("${file%%_*}"); done
if ((${#missing[@]})); then
    say "downloading ${#missing[@]} of ${#files[@]} packages ($(awk '{s += $3} END {printf "%.0f MB in all", s / 1e6}' "$work/uris"))"
    (cd "$debs" && apt-get download "${missing[@]}" >&2)
fi
for file in "${files[@]}"; do [ -f "$debs/$file" ] || { say "apt-get download did not leave $file"; exit 1; }; done

root="$work/root"
mkdir -p "$root/usr/bin" "$root/usr/sbin" "$root/usr/lib" "$root/usr/lib64"
# The merged /usr layout of Debian 12, as debootstrap makes it.
for top in bin sbin lib lib64; do ln -s "usr/$top" "$root/$top"; done
count=0
for file in "${files[@]}"; do
    count=$((count + 1))
    ((count % 20 == 0 || count == ${#files[@]})) && say "unpacking $count/${#files[@]}"
    dpkg-deb --fsys-tarfile "$debs/$file" | tar -x --keep-directory-symlink -C "$root"
done

say "kernel modules of $release, and depmod"
dpkg-deb --fsys-tarfile "$kernel_deb" | tar -x --keep-directory-symlink -C "$root" ./lib/modules
depmod -b "$root" "$release"

# What the maintainer scripts would have done, as far as the guest needs it.
install -m 0644 "$root/usr/share/base-passwd/passwd.master" "$root/etc/passwd"
install -m 0644 "$root/usr/share/base-passwd/group.master" "$root/etc/group"
echo "docker:x:999:" >> "$root/etc/group"
awk -F: '{print $1 ":*:19000:0:99999:7:::"}' "$root/etc/passwd" > "$root/etc/shadow"
chmod 0640 "$root/etc/shadow"
mkdir -p "$root/etc/ssl/certs"
cat "$root"/usr/share/ca-certificates/*/*.crt > "$root/etc/ssl/certs/ca-certificates.crt"
ln -sf /usr/bin/mawk "$root/usr/bin/awk"
for tool in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
    ln -sf "xtables-nft-multi" "$root/usr/sbin/$tool"
done
# /var/run and /var/lock point into the guest's /run (a package may ship them as empty folders).
rm -rf "$root/var/run" "$root/var/lock"
ln -s /run "$root/var/run"
ln -s /run/lock "$root/var/lock"
echo sandbox > "$root/etc/hostname"
printf '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n' > "$root/etc/hosts"
mkdir -p "$root/etc/docker" "$root/var/lib/docker" "$root/var/lib/containerd" "$root/var/log" "$root/workspace"
# The agent starts the daemons itself; nothing else in the image is an init system.
rm -rf "$root"/usr/share/{doc,man,info,locale,lintian,bash-completion} "$root"/etc/init.d "$root"/lib/systemd/system
echo "$release" > "$root/etc/hyper-kernel-release"

size_mib="$(du -sm "$root" | cut -f1)"
image_mib=$((size_mib * 5 / 4 + 128))
say "writing the ext4 image (${size_mib} MiB of files in a ${image_mib} MiB image)"
mkdir -p "$(dirname "$image")"
rm -f "$image.new"
truncate -s "${image_mib}M" "$image.new"
mke2fs -q -t ext4 -d "$root" -L hyper-docker -m 0 -E root_owner=0:0 "$image.new" "${image_mib}M"
mv "$image.new" "$image"
echo "$inputs" > "$image.inputs"
say "built $image: $(du -h --apparent-size "$image" | cut -f1) image, $(du -h "$image" | cut -f1) on disk, kernel $release"
