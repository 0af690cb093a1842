# Sourced by the nested harness's L1 checks scripts: L1's own set-up, and the check helpers.
/bin/busybox --install -s /bin 2>/dev/null
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
for module in $(cat /modules/order); do insmod "$module" || echo "INFO insmod $module failed"; done
export HOME=/root HYPERCTL_GUEST_KIT=/kit PATH=/bin:/usr/bin:/sbin:/usr/sbin

passed=0
failed=0
# record STATUS NAME: a PASS line for status 0, else a FAIL line; counted.
record() {
    if [ "$1" = 0 ]; then
        echo "PASS $2"
        passed=$((passed + 1))
    else
        echo "FAIL $2"
        failed=$((failed + 1))
    fi
}
# check NAME COMMAND...: passes when the command does.
check() {
    name="$1"
    shift
    "$@"
    record $? "$name"
}
# check_all NAME 'CONDITION': like check, for a compound shell condition (evaluated as a whole).
check_all() {
    eval "$2"
    record $? "$1"
}
# finish: the result line, then L1 powers off.
finish() {
    echo "RESULT $passed $failed"
    sync
    poweroff -f
}

[ -c /dev/kvm ] || echo "INFO /dev/kvm is missing"
hyperctl backends | sed 's/^/INFO /'
