#!/usr/bin/env bash
# The nested harness for the Docker flavour: inside L1 (see lib.sh), `hyperctl run/create --backend kvm
# --docker` boots the guest kit's cloud kernel with the Docker image (Scripts/docker-image.sh), which L1
# gets as its virtio-blk disk /dev/vda, and checks the private daemon end to end. The checks themselves are
# in docker-checks.sh.
#
# Usage: Tests/Nested/docker.sh [--keep-log FILE]
# Ends with "N passed, M failed" and exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
log_copy=""
[ "${1:-}" = "--keep-log" ] && log_copy="${2:?--keep-log needs a file}"

. Tests/Nested/lib.sh
Scripts/docker-image.sh
image="$(Scripts/docker-image.sh --print-path)"
nested_prepare Tests/Nested/docker-checks.sh virtio_ring virtio virtio_mmio virtio_blk

# An image for `docker import`: busybox and its applets, as a tarball.
mkdir -p "$work/busybox-image/bin"
install -m 0755 /bin/busybox "$work/busybox-image/bin/busybox"
for applet in sh echo cat ls sleep httpd wget hostname; do ln -s busybox "$work/busybox-image/bin/$applet"; done
tar -C "$work/busybox-image" -cf "$root/kit/busybox.tar" .

nested_boot "$log_copy" 4096 -drive "id=docker,file=$image,format=raw,if=none,readonly=on" -device virtio-blk-device,drive=docker
