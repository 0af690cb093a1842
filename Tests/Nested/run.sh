#!/usr/bin/env bash
# The nested harness: end-to-end checks of `hyperctl run --backend kvm` booting the Debian cloud kernel
# on a real /dev/kvm, on any machine.
#
# L1 (Debian's generic kernel under QEMU's TCG emulating AMD SVM) runs hyperctl on its real /dev/kvm, which
# boots L2, the guest kit's cloud kernel (see lib.sh). The checks themselves are in checks.sh.
#
# Usage: Tests/Nested/run.sh [--keep-log FILE]
# Ends with "N passed, M failed" and exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=Tests/Nested
log_copy=""
[ "${1:-}" = "--keep-log" ] && log_copy="${2:?--keep-log needs a file}"

. Tests/Nested/lib.sh
nested_prepare Tests/Nested/checks.sh
install -m 0755 "$here/echo-server.sh" "$root/bin/echo-server"

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

nested_boot "$log_copy" 3072
