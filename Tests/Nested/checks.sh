#!/bin/busybox sh
# /init of the nested harness's L1: loads kvm-amd, then checks `hyperctl run --backend kvm` end to end,
# each run booting the guest kit's kernel as L2. Prints PASS/FAIL lines and "RESULT passed failed".
. /bin/check-lib.sh
run() { hyperctl run --backend kvm "$@"; }

mkdir -p /ws /empty
cd /ws
echo "from the host" > /ws/in.txt

out="$(run --report /tmp/echo.json -- echo hello 2>/tmp/err)"; code=$?
check "echo output" [ "$code" = 0 -a "$out" = hello ]
[ "$code" = 0 ] || sed 's/^/INFO   /' /tmp/err

# The default start path: the first run boots cold and saves the boot snapshot at agent ready; the next
# ones start from it; --cold-boot boots; a damaged cached snapshot is replaced by a cold boot.
check_all "the first run boots cold and saves its boot snapshot" 'grep -q "\"start\": \"cold-boot\"" /tmp/echo.json && grep -q "\"saved\"" /tmp/echo.json'
out="$(run --report /tmp/second.json -- echo again 2>/tmp/err)"; code=$?
check_all "the next run starts from the boot snapshot" '[ "$code" = 0 ] && [ "$out" = again ] && grep -q "\"start\": \"snapshot\"" /tmp/second.json'
[ "$code" = 0 ] || sed 's/^/INFO   /' /tmp/err
out="$(run --cold-boot --report /tmp/cold.json -- echo cold 2>/tmp/err)"; code=$?
check_all "--cold-boot boots, and saves nothing" '[ "$code" = 0 ] && [ "$out" = cold ] && grep -q "\"start\": \"cold-boot\"" /tmp/cold.json \
    && ! grep -q bootSnapshot /tmp/cold.json'
cached="$(ls -d "$HOME"/.cache/hyperctl/snapshots/512m-1cpu-* 2>/dev/null | head -1)"
printf 'x' | dd of="$cached/state" bs=1 seek=40 conv=notrunc 2>/dev/null
out="$(run --report /tmp/remade.json -- echo remade 2>/tmp/err)"; code=$?
again="$(run --report /tmp/after.json -- echo after 2>>/tmp/err)"
check_all "a damaged boot snapshot is replaced: a cold boot that says why, then restores again" '[ "$code" = 0 ] && [ "$out" = remade ] \
    && grep -q "\"start\": \"cold-boot\"" /tmp/remade.json && grep -q "\"replaced\".*checksum" /tmp/remade.json \
    && [ "$again" = after ] && grep -q "\"start\": \"snapshot\"" /tmp/after.json'
[ "$code" = 0 ] || sed 's/^/INFO   /' /tmp/err

run -- true; code=$?
check "exit code 0" [ "$code" = 0 ]

run -- sh -c 'exit 42'; code=$?
check "exit code 42" [ "$code" = 42 ]

run -- no-such-command 2>/tmp/err; code=$?
check_all "exit code 127 (command not found)" '[ "$code" = 127 ] && grep -q "command not found" /tmp/err'

run -- sh -c 'kill -TERM $$'; code=$?
check "exit code 143 (killed by SIGTERM)" [ "$code" = 143 ]

out="$(echo "piped in" | run -i -- cat)"; code=$?
check "stdin passthrough" [ "$code" = 0 -a "$out" = "piped in" ]

out="$(run -- sh -c 'head -c 3000000 /dev/zero' | wc -c)"
check "3 MB of output arrive whole (guest writes stall while the host is behind)" [ "$out" = 3000000 ]
out="$(head -c 2000000 /dev/zero | run -i -- wc -c)"
check "2 MB of stdin arrive whole (paced by the guest)" [ "$out" = 2000000 ]
head -c 3000000 /dev/urandom > /ws/big.bin
out="$(run -w /ws -- sh -c 'md5sum big.bin | cut -d" " -f1; head -c 1000000 /dev/urandom > big-out.bin')"
check "a 3 MB workspace file arrives intact" [ "$out" = "$(md5sum /ws/big.bin | cut -d' ' -f1)" ]
check "a 1 MB file comes back whole" [ "$(wc -c < /ws/big-out.bin 2>/dev/null)" = 1000000 ]
rm -f /ws/big.bin /ws/big-out.bin

out="$(run -w /ws -- sh -c 'cat in.txt; echo written > out.txt; mkdir -p sub; echo deep > sub/file; rm in.txt; echo err >&2' 2>/tmp/err)"; code=$?
check "workspace in" [ "$code" = 0 -a "$out" = "from the host" ]
check "workspace file back" [ "$(cat /ws/out.txt 2>/dev/null)" = written -a "$(cat /ws/sub/file 2>/dev/null)" = deep ]
check "workspace removal back" [ ! -e /ws/in.txt ]
check "stderr passthrough" [ "$(cat /tmp/err)" = err ]

out="$(run --kernel /kit/vmlinuz -- echo bzImage)"; code=$?
check "bzImage entry (64-bit boot protocol)" [ "$code" = 0 -a "$out" = bzImage ]

out="$(run -t -- sh -c 'test -t 0 && test -t 1 && tty' < /dev/console | tr -d '\r')"; code=$?
check_all "a terminal for -t ($out)" '[ "$code" = 0 ] && case "$out" in /dev/pts/*) true ;; *) false ;; esac'

guest="$(run -- uname -r)"
check "guest kernel is its own (L1 $(uname -r), guest $guest)" [ -n "$guest" -a "$guest" != "$(uname -r)" ]
out="$(run -- sh -c 'hostname; head -c 16 /dev/urandom | od -An -tx1 | tr -d " \n"')"
again="$(run -- sh -c 'hostname; head -c 16 /dev/urandom | od -An -tx1 | tr -d " \n"')"
check_all "the guest is named sandbox, and its random generator differs per sandbox" '[ "$(echo "$out" | head -1)" = sandbox ] \
    && [ -n "$(echo "$out" | sed -n 2p)" ] && [ "$(echo "$out" | sed -n 2p)" != "$(echo "$again" | sed -n 2p)" ]'
guest_boot="$(run -- cat /proc/sys/kernel/random/boot_id)"
check "guest boot id differs from L1's" [ -n "$guest_boot" -a "$guest_boot" != "$(cat /proc/sys/kernel/random/boot_id)" ]

run --memory 256M --cpus 2 -- sh -c 'test $(grep -c ^processor /proc/cpuinfo) = 2 && test $(sed -n "s/MemTotal: *\([0-9]*\).*/\1/p" /proc/meminfo) -lt 262144'; code=$?
check "limits size the VM (2 vCPUs, 256 MiB)" [ "$code" = 0 ]

out="$(run --disk /kit/data.img:ro -- sh -c 'mount -o ro /dev/vda /mnt && cat /mnt/hello' 2>/tmp/err)"; code=$?
check "virtio-blk disk (read-only)" [ "$code" = 0 -a "$out" = "from the disk" ]
[ "$code" = 0 ] || sed 's/^/INFO   /' /tmp/err
run --disk /kit/data.img -- sh -c 'mount /dev/vda /mnt && echo written > /mnt/new && umount /mnt'; code=$?
out="$(run --disk /kit/data.img:ro -- sh -c 'mount -o ro /dev/vda /mnt && cat /mnt/new')"
check "virtio-blk disk (writes persist)" [ "$code" = 0 -a "$out" = written ]
out="$(run -- sh -c 'head -c 16 /dev/hwrng | wc -c')"
check "virtio-rng feeds /dev/hwrng" [ "$out" = 16 ]

# The egress proxy through the guest agent's listener, and secrets: web servers on L1's loopback.
ip link set lo up
mkdir -p /www
echo "from L1" > /www/hello
head -c 3000000 /dev/urandom > /www/big.bin
httpd -p 127.0.0.1:18080 -h /www
nc -ll -p 18081 -e /bin/echo-server &
echo_server=$!
allow="--net allow:127.0.0.1:18080,127.0.0.1:18081"
out="$(run $allow --report /tmp/egress.json -- wget -q -O - http://127.0.0.1:18080/hello 2>/tmp/err)"; code=$?
check "an allowlisted host answers through the proxy" [ "$code" = 0 -a "$out" = "from L1" ]
[ "$code" = 0 ] || sed 's/^/INFO   /' /tmp/err
check "the report lists the decision" grep -q '"egress"' /tmp/egress.json && grep -q '"allowed": true' /tmp/egress.json
out="$(run $allow -- sh -c 'wget -q -O - http://127.0.0.1:18080/big.bin | md5sum | cut -d" " -f1')"
check "3 MB arrive whole through the proxy (paced by acknowledgements)" [ "$out" = "$(md5sum /www/big.bin | cut -d' ' -f1)" ]
run $allow -- sh -c 'wget -q -O - http://127.0.0.1:18082/ || wget -q -O - http://169.254.169.254/ || wget -q -O - http://example.org/' 2>/tmp/err; code=$?
check_all "an unlisted port, the metadata address and an unlisted name are refused" '[ "$code" != 0 ] && grep -q "egress denied: 127.0.0.1:18082" /tmp/err \
    && grep -q "egress denied: 169.254.169.254:80" /tmp/err && grep -q "egress denied: example.org:80" /tmp/err'
run -- sh -c 'wget -q -O - http://127.0.0.1:18080/hello' 2>/dev/null; code=$?
check "without an allowlist there is no way out" [ "$code" != 0 ]
echo "file-secret-value" > /tmp/key
out="$(SOURCE_TOKEN=injected-value run $allow --secret TOKEN=env:SOURCE_TOKEN@127.0.0.1:18081 --secret KEY=file:/tmp/key -- sh -c '
    echo "$TOKEN"; cat /run/secrets/TOKEN; echo; cat /run/secrets/KEY
    wget -q -O - --header "Authorization: Bearer $TOKEN" http://127.0.0.1:18081/
    echo changed > /run/secrets/KEY 2>/dev/null && echo writable || echo read-only
    cat /proc/1/environ /proc/self/environ /run/secrets/* | grep -c injected-value; true' 2>/tmp/err)"; code=$?
set -- $out
token="$1" token_file="$2" key="$3" header="$4 $5 $6" written="$7" leaks="$8"
check_all "an injected secret: the placeholder inside, the value at the bound host" '[ "$code" = 0 ] && case "$token" in hyperctl-placeholder-TOKEN-*) true ;; *) false ;; esac \
    && [ "$token_file" = "$token" -a "$header" = "Authorization: Bearer injected-value" -a "$leaks" = 0 ]'
check "a file secret: readable, read-only" [ "$key" = file-secret-value -a "$written" = read-only ]
[ "$code" = 0 ] || { echo "INFO   $out"; sed 's/^/INFO   /' /tmp/err; }
kill "$echo_server" 2>/dev/null

# Sessions on kvm: one VM for many commands, several at once.
name="$(hyperctl create --backend kvm -w /ws --name vm1 2>/tmp/err)"; code=$?
check "create boots a kvm sandbox and returns when it is ready" [ "$code" = 0 -a "$name" = vm1 ]
[ "$code" = 0 ] || sed 's/^/INFO   /' /tmp/err
hyperctl exec vm1 -- sh -c 'touch /tmp/a; for i in $(seq 1 300); do [ -e /tmp/b ] && echo a-saw-b && exit 0; sleep 0.1; done; exit 9' > /tmp/exec-a 2>&1 &
first=$!
hyperctl exec vm1 -- sh -c 'touch /tmp/b; for i in $(seq 1 300); do [ -e /tmp/a ] && echo b-saw-a && exit 0; sleep 0.1; done; exit 9' > /tmp/exec-b 2>&1 &
second=$!
wait "$first"; code_a=$?
wait "$second"; code_b=$?
check_all "two concurrent execs run at once in one VM" '[ "$code_a" = 0 -a "$code_b" = 0 ] && grep -q a-saw-b /tmp/exec-a && grep -q b-saw-a /tmp/exec-b'
[ "$code_a" = 0 -a "$code_b" = 0 ] || sed 's/^/INFO   /' /tmp/exec-a /tmp/exec-b
out="$(hyperctl exec vm1 -- sh -c 'cat /proc/sys/kernel/random/boot_id; exit 3')"; code=$?
again="$(hyperctl exec vm1 -- cat /proc/sys/kernel/random/boot_id)"
check "execs share one guest and keep their exit codes" [ "$code" = 3 -a -n "$out" -a "$out" = "$again" ]
out="$(hyperctl exec vm1 -- hostname)"
check "a session's hostname is its name" [ "$out" = vm1 ]
out="$(echo piped | hyperctl exec -i vm1 -- cat)"
check "exec -i forwards stdin" [ "$out" = piped ]
hyperctl exec vm1 -- no-such-command 2>/dev/null; code=$?
check "exec of a missing program is 127" [ "$code" = 127 ]
hyperctl exec vm1 -- sh -c 'echo from-session > session.txt'
hyperctl ps > /tmp/ps.txt
check "ps lists the running kvm sandbox" grep -q "^vm1 *kvm *running" /tmp/ps.txt
sed 's/^/INFO   ps: /' /tmp/ps.txt
hyperctl stop vm1 > /dev/null; code=$?
check_all "stop ends it and copies the workspace back" '[ "$code" = 0 -a "$(cat /ws/session.txt 2>/dev/null)" = from-session ] \
    && hyperctl ps | grep -q "^vm1 *kvm *stopped"'
hyperctl rm vm1 > /dev/null; code=$?
check_all "rm removes it" '[ "$code" = 0 ] && ! hyperctl ps | grep -q vm1'

# Snapshots: a session written out while it runs, restored as new sessions (ten clones) and as a run.
hyperctl create --backend kvm --name origin > /dev/null 2>/tmp/err; code=$?
hyperctl exec origin -- sh -c 'echo kept-in-memory > /tmp/marker' 2>>/tmp/err
hyperctl snapshot origin --to /tmp/snap > /dev/null 2>>/tmp/err; code=$?
check_all "snapshot writes a running sandbox out" '[ "$code" = 0 ] && [ -f /tmp/snap/memory ] && [ -f /tmp/snap/state ] && [ -f /tmp/snap/sandbox.json ]'
[ "$code" = 0 ] || sed 's/^/INFO   /' /tmp/err
out="$(hyperctl exec origin -- cat /tmp/marker 2>&1)"
check "the sandbox goes on after its snapshot" [ "$out" = kept-in-memory ]
hyperctl stop origin > /dev/null; hyperctl rm origin > /dev/null
cd /empty
for i in 1 2 3 4 5 6 7 8 9 10; do
    hyperctl create --backend kvm --from-snapshot /tmp/snap --name "clone$i" > /dev/null 2>>/tmp/clone-err &&
        timeout 60 hyperctl exec "clone$i" -- sh -c 'echo "$(hostname) $(head -c 16 /dev/urandom | od -An -tx1 | tr -d " \n") $(cat /tmp/marker)"' >> /tmp/clones 2>>/tmp/clone-err
    timeout 60 hyperctl stop "clone$i" > /dev/null 2>&1; hyperctl rm "clone$i" > /dev/null 2>&1
done
cd /ws
sed 's/^/INFO clone: /' /tmp/clones
check_all "ten session clones of one snapshot answer: the original's memory, each its own hostname and random state" '[ "$(wc -l < /tmp/clones)" = 10 ] \
    && [ "$(cut -d" " -f1 /tmp/clones | sort -u | wc -l)" = 10 ] && [ "$(cut -d" " -f2 /tmp/clones | sort -u | wc -l)" = 10 ] \
    && [ "$(cut -d" " -f3 /tmp/clones | sort -u)" = kept-in-memory ]'
[ -s /tmp/clone-err ] && sed 's/^/INFO   /' /tmp/clone-err | head -5
out="$(run --from-snapshot /tmp/snap --report /tmp/restored.json --timeout 120s -w /ws -- sh -c 'cat /tmp/marker; cat /ws/session.txt; date +%s' 2>/tmp/err)"; code=$?
skew=$(( $(date +%s) - $(echo "$out" | sed -n 3p) ))
check_all "run --from-snapshot: the command runs in the restored guest, with the workspace and the current time (skew ${skew}s)" '[ "$code" = 0 ] \
    && [ "$(echo "$out" | head -2)" = "kept-in-memory
from-session" ] && [ "$skew" -ge -5 ] && [ "$skew" -le 20 ] && grep -q "\"start\": \"snapshot\"" /tmp/restored.json'
[ "$code" = 0 ] || sed 's/^/INFO   /' /tmp/err
cp -r /tmp/snap /tmp/bad-snap && printf 'x' | dd of=/tmp/bad-snap/state bs=1 seek=40 conv=notrunc 2>/dev/null
run --from-snapshot /tmp/bad-snap -- true 2>/tmp/err; code=$?
check_all "a corrupted snapshot is refused with 125" '[ "$code" = 125 ] && grep -q -i "checksum" /tmp/err'
hyperctl bench snapshot --guest kit --runs 2 --warmup 0 --json /tmp/kit-bench.json > /tmp/kit-bench.txt 2>/tmp/err; code=$?
check_all "bench snapshot --guest kit times restore against cold boot to agent ready" '[ "$code" = 0 ] && grep -q restoreToColdRatio /tmp/kit-bench.json'
[ "$code" = 0 ] || sed 's/^/INFO   /' /tmp/err
sed 's/^/INFO kit bench: /' /tmp/kit-bench.txt

rm -f /tmp/sigout
hyperctl run --backend kvm -w /ws -- sh -c 'echo before > sig.txt; echo started; sleep 1000' > /tmp/sigout 2>&1 &
pid=$!
for _ in $(seq 1 600); do grep -q started /tmp/sigout 2>/dev/null && break; sleep 0.5; done
kill -INT "$pid"
wait "$pid"; code=$?
check "SIGINT reaches the command (130) and its files come back" [ "$code" = 130 -a "$(cat /ws/sig.txt 2>/dev/null)" = before ]

run --guest-console /tmp/panic.log -- sh -c 'echo c > /proc/sysrq-trigger' 2>/tmp/err; code=$?
check_all "guest panic ends with a clear error (125)" '[ "$code" = 125 ] && grep -q "stopped before the command finished" /tmp/err'
sed 's/^/INFO   /' /tmp/err | head -8
grep -a -i -E "panic|sysrq" /tmp/panic.log | head -5 | sed 's/^/INFO   console: /'

run --timeout 20s --initrd /kit/hang.cpio -- true 2>/tmp/err; code=$?
check "hung guest ends with the timeout code (124)" [ "$code" = 124 ]

run --timeout 20s -- sleep 1000 2>/tmp/err; code=$?
check_all "hung command ends with the timeout code (124)" '[ "$code" = 124 ] && grep -q "timed out" /tmp/err'

# The benchmark's kvm rows, on a host whose KVM counts as accelerated (numbers mean nothing under TCG).
hyperctl bench cold-start --backends kvm,kvm-cold-boot --peers none --runs 1 --warmup 0 --json /tmp/bench.json > /tmp/bench.txt 2>/dev/null; code=$?
check_all "bench measures kvm and kvm-cold-boot, each to agent ready" '[ "$code" = 0 ] && grep -q "\"backend\": \"kvm-agent-ready\"" /tmp/bench.json \
    && grep -q "\"backend\": \"kvm-cold-boot-agent-ready\"" /tmp/bench.json && ! grep -q "\"skipped\"" /tmp/bench.json'
sed 's/^/INFO bench: /' /tmp/bench.txt

# The phase timeline of `run -- true`, and each phase's share of the total (absolute times mean nothing
# here; the shares show which phases are slow), for the default guest (PVH vmlinux, plain initramfs), the
# LZ4-compressed initramfs and the bzImage.
phases() {
    report="$1"
    tr -d '\n ' < "$report" | grep -o '"phase":"[a-zA-Z]*","ns":[0-9]*' | sed 's/"phase":"\([a-zA-Z]*\)","ns":\([0-9]*\)/\1 \2/' > /tmp/phases
    total="$(tail -1 /tmp/phases | cut -d' ' -f2)"
    previous=0
    line=""
    while read -r phase ns; do
        line="$line $phase +$(( (ns - previous) / 1000000 ))ms ($(( (ns - previous) * 100 / total ))%)"
        previous="$ns"
    done < /tmp/phases
    ready="$(tr -d '\n ' < "$report" | grep -o '"guestReadyNanoseconds":"[0-9]*"' | grep -o '[0-9][0-9]*')"
    echo "INFO $2: total $(( total / 1000000 ))ms, guest uptime at agent ready $(( ${ready:-0} / 1000000 ))ms:$line"
}
run --cold-boot --report /tmp/pvh.json -- true && phases /tmp/pvh.json "phases (PVH vmlinux, initramfs uncompressed)"
run --report /tmp/lz4.json --initrd /kit/initramfs.cpio.lz4 -- true && phases /tmp/lz4.json "phases (PVH vmlinux, initramfs LZ4)"
run --report /tmp/bz.json --kernel /kit/vmlinuz -- true && phases /tmp/bz.json "phases (bzImage, initramfs uncompressed)"
run --report /tmp/restored.json -- true && phases /tmp/restored.json "phases (from the boot snapshot)"

finish
