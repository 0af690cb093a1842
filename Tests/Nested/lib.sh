# The nested harness's host side, sourced by run.sh and docker.sh.
#
# L1 is Debian's generic kernel under QEMU's TCG emulating AMD SVM (`-cpu qemu64,+svm,+npt`), with
# kvm-amd loaded, so /dev/kvm inside L1 is a real KVM driving (emulated) hardware virtualization. hyperctl
# runs there and boots L2, the guest kit's cloud kernel, as its sandbox. Timing inside means nothing;
# correctness is real. L1's /init is a checks script that prints PASS/FAIL lines and "RESULT passed failed".

say() { echo "nested: $*" >&2; }

# nested_prepare INIT [MODULE...]: builds hyperctl and the guest kit, and L1's root in $work/root with the
# checks script INIT as /init and kvm-amd plus the named modules of L1's kernel (loaded in /modules/order).
nested_prepare() {
    local init="$1"
    shift
    Scripts/setup.sh
    Scripts/guest-kit.sh
    kit="$(Scripts/guest-kit.sh --print-dir)"
    swift build -c release --product hyperctl >&2
    local hyperctl
    hyperctl="$(swift build -c release --product hyperctl --show-bin-path)/hyperctl"

    # L1's kernel: Debian's generic kernel, so that its release differs from the guest's cloud kernel.
    local cache="${HYPERCTL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hyperctl}"
    mkdir -p "$cache/debs"
    local l1_package l1_deb
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
    l1_kernel="$work/kernel/boot/vmlinuz-$release"
    local modules="$work/kernel/lib/modules/$release"

    root="$work/root"
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,root,kit,modules,etc}
    install -m 0755 /bin/busybox "$root/bin/busybox"
    local applet
    for applet in $(/bin/busybox --list-full); do [ -e "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"; done
    install -m 0755 "$hyperctl" "$root/bin/hyperctl"
    cp "$kit/vmlinuz" "$kit/vmlinux" "$kit/initramfs.cpio" "$kit/initramfs.cpio.lz4" "$root/kit/"
    install -m 0755 "$init" "$root/init"
    install -m 0644 Tests/Nested/check-lib.sh "$root/bin/check-lib.sh"

    # The modules and what they need, dependencies first (from each module's modinfo section).
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
    local name
    for name in kvm-amd "$@"; do add_module "$name"; done
}

# nested_boot LOG_COPY MEMORY_MIB [QEMU_ARGUMENT...]: packs L1's root, boots it, prints its PASS/FAIL/INFO
# lines and "N passed, M failed"; returns non-zero on any failure.
nested_boot() {
    local log_copy="$1" memory="$2"
    shift 2
    (cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) > "$work/l1.cpio"
    say "booting L1 ($release) under TCG with SVM; L2 is the guest kit's kernel ($(cat "$kit/release"))"
    local log="$work/l1.log" qemu_status khz
    # TCG's TSC runs at the host's rate. Told it, L1's kernel needs no reference timer to calibrate: on
    # QEMU's microvm with ACPI there is none (no HPET, no PM timer), and some QEMU builds then never tick.
    khz="$(awk -F: '/^cpu MHz/ {printf "%d", $2 * 1000; exit}' /proc/cpuinfo)"
    set +e
    timeout 1500 qemu-system-x86_64 -M microvm -accel tcg -cpu qemu64,+svm,+npt -m "$memory" -smp 1 \
        -kernel "$l1_kernel" -initrd "$work/l1.cpio" \
        -append "console=ttyS0 reboot=t panic=-1 edd=off quiet tsc_early_khz=${khz:-2000000}" \
        -display none -no-reboot -nodefaults -serial stdio "$@" < /dev/null > "$log" 2>&1
    qemu_status=$?
    set -e
    [ -n "$log_copy" ] && cp "$log" "$log_copy"

    grep -E '^(PASS|FAIL|INFO) ' "$log" | tr -d '\r' || true
    local result passed failed
    result="$(grep -a '^RESULT ' "$log" | tr -d '\r' | tail -1 || true)"
    if [ -z "$result" ]; then
        say "L1 did not finish the checks (qemu exit $qemu_status); the end of its console:"
        tail -40 "$log" >&2
        echo "0 passed, 1 failed"
        return 1
    fi
    passed="$(echo "$result" | awk '{print $2}')"
    failed="$(echo "$result" | awk '{print $3}')"
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
}
