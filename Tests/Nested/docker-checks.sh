#!/bin/busybox sh
# /init of the Docker flavour's nested harness: L1 has the Docker image as /dev/vda and checks
# `hyperctl --backend kvm --docker` end to end. Prints PASS/FAIL lines and "RESULT passed failed".
. /bin/check-lib.sh
export HYPERCTL_DOCKER_IMAGE=/dev/vda
scratch="$HOME/.cache/hyperctl/scratch"
mkdir -p /ws/build /other /empty
cp /kit/busybox.tar /ws/
printf 'FROM local/busybox\nRUN echo built-by-a-run-step > /built.txt\nCMD ["cat", "/built.txt"]\n' > /ws/build/Dockerfile
printf 'services:\n  server:\n    image: local/busybox\n    network_mode: host\n    command: httpd -f -p 127.0.0.1:8081 -h /bin\n  client:\n    image: local/busybox\n    network_mode: host\n    depends_on: [server]\n    command: sh -c "for i in 1 2 3 4 5 6 7 8 9 10; do wget -q -O /dev/null http://127.0.0.1:8081/sh && echo compose-reached && exit 0; sleep 1; done; exit 1"\n' > /ws/compose.yml
echo other > /other/file
cd /empty
no_daemon_on_l1() { [ ! -e /var/run/docker.sock ] && [ ! -e /run/docker.sock ] && ! ps | grep -q '[d]ockerd\|[c]ontainerd'; }

# One-shot: the daemon is there before the command, and the report has its timings.
out="$(hyperctl run --backend kvm --docker --report /tmp/run.json -- docker info --format '{{.Driver}} {{.DockerRootDir}} {{.OperatingSystem}}' 2>/tmp/err)"; code=$?
check_all "docker info shows the private daemon ($out)" '[ "$code" = 0 ] && echo "$out" | grep -q "^overlay2 /var/lib/docker Debian"'
[ "$code" = 0 ] || sed 's/^/INFO   /' /tmp/err
check_all "the report has the daemon's start and ready times" 'grep -q "daemonStartMilliseconds" /tmp/run.json && grep -q "daemonReadyMilliseconds" /tmp/run.json'
tr -d '\n ' < /tmp/run.json | grep -o '"agentReady","ns":[0-9]*\|"docker":{[^}]*}' | sed 's/^/INFO timings: /'
check_all "the scratch disk is gone with the sandbox" '[ "$code" = 0 ] && [ -d "$scratch" ] && [ -z "$(ls -A "$scratch")" ]'

# The Docker flavour's boot snapshot: saved by that first run once its daemon was ready; the next run starts
# from it with the daemon up.
check_all "the first Docker run saves its boot snapshot once the daemon is ready" 'grep -q "\"start\": \"cold-boot\"" /tmp/run.json \
    && grep -q "\"saved\": \"[^\"]*-docker-" /tmp/run.json'
out="$(hyperctl run --backend kvm --docker --report /tmp/run2.json -- docker info --format '{{.Driver}} {{.ContainersRunning}}' 2>/tmp/err)"; code=$?
check_all "the next Docker run starts from it, its daemon answering at once ($out)" '[ "$code" = 0 ] && [ "$out" = "overlay2 0" ] \
    && grep -q "\"start\": \"snapshot\"" /tmp/run2.json'
[ "$code" = 0 ] || sed 's/^/INFO   /' /tmp/err
tr -d '\n ' < /tmp/run2.json | grep -o '"agentReady","ns":[0-9]*\|"commandStarted","ns":[0-9]*' | sed 's/^/INFO restored Docker run: /'

# A session: import, run, build; a second session sees none of it.
hyperctl create --backend kvm --docker --memory 1G -w /ws --name first > /dev/null 2>/tmp/err; code=$?
check "create --docker returns once the daemon is ready" [ "$code" = 0 ]
[ "$code" = 0 ] || sed 's/^/INFO   /' /tmp/err
out="$(hyperctl exec first -- sh -c 'docker import /ws/busybox.tar local/busybox >/dev/null && docker run --rm --network none local/busybox echo hello-from-a-container' 2>/tmp/err)"; code=$?
check_all "an imported image runs with --network none" '[ "$code" = 0 ] && [ "$out" = hello-from-a-container ]'
[ "$code" = 0 ] || sed 's/^/INFO   /' /tmp/err
out="$(hyperctl exec first -- sh -c 'DOCKER_BUILDKIT=0 docker build -q -t local/built /ws/build >/dev/null && docker run --rm --network none local/built' 2>/tmp/err)"; code=$?
check_all "docker build with a RUN step, then its image runs" '[ "$code" = 0 ] && [ "$out" = built-by-a-run-step ]'
[ "$code" = 0 ] || sed 's/^/INFO   /' /tmp/err
out="$(hyperctl exec first -- sh -c 'docker run -d --name web --network host local/busybox httpd -f -p 127.0.0.1:8080 -h /bin >/dev/null &&
    docker run --rm --network host local/busybox sh -c "for i in 1 2 3 4 5 6 7 8 9 10; do wget -q -O /dev/null http://127.0.0.1:8080/sh && echo reached && exit 0; sleep 1; done; exit 1"' 2>/tmp/err)"; code=$?
check_all "two containers talk to each other" '[ "$code" = 0 ] && [ "$out" = reached ]'
[ "$code" = 0 ] || sed 's/^/INFO   /' /tmp/err
out="$(hyperctl exec first -- sh -c 'cd /ws && docker-compose -f compose.yml up --abort-on-container-exit --exit-code-from client 2>&1' 2>&1)"; code=$?
check_all "docker-compose runs a two-service setup" '[ "$code" = 0 ] && echo "$out" | grep -q compose-reached'
[ "$code" = 0 ] || echo "$out" | tail -8 | sed 's/^/INFO   /'
hyperctl exec first -- docker pull busybox > /dev/null 2>/tmp/err; code=$?
check_all "with network none, docker pull cannot reach a registry" '[ "$code" != 0 ] && grep -q "Error response from daemon" /tmp/err'
sed 's/^/INFO   /' /tmp/err | head -3
check_all "L1 has no Docker socket or daemon while a sandbox runs one" 'hyperctl exec first -- docker info > /dev/null 2>&1 && no_daemon_on_l1'


hyperctl create --backend kvm --docker --memory 1G -w /other --name second > /dev/null 2>/tmp/err; code=$?
out="$(hyperctl exec second -- sh -c 'echo "images:$(docker images -q | wc -l) containers:$(docker ps -aq | wc -l)"' 2>>/tmp/err)"
mine="$(hyperctl exec first -- sh -c 'echo "images:$(docker images -q | wc -l) containers:$(docker ps -aq | wc -l)"' 2>>/tmp/err)"
check_all "a second sandbox sees none of the first one's images or containers ($out; first: $mine)" \
    '[ "$code" = 0 ] && [ "$out" = "images:0 containers:0" ] && [ "$mine" != "images:0 containers:0" ]'
[ "$code" = 0 ] || sed 's/^/INFO   /' /tmp/err
check_all "L1 has no Docker socket or daemon with two sandboxes up" 'hyperctl exec second -- docker info > /dev/null 2>&1 && no_daemon_on_l1' 
hyperctl stop second > /dev/null; hyperctl rm second > /dev/null

# A snapshot of the first session (its scratch disk copied), restored with its daemon ready: the running
# container and the built image are there at once.
hyperctl snapshot first --to /tmp/docker-snap > /dev/null 2>/tmp/err; code=$?
check_all "a Docker session is snapshotted with its scratch disk" '[ "$code" = 0 ] && [ -f /tmp/docker-snap/scratch ] && [ -f /tmp/docker-snap/memory ]'
[ "$code" = 0 ] || sed 's/^/INFO   /' /tmp/err
hyperctl stop first > /dev/null; hyperctl rm first > /dev/null
out="$(hyperctl run --backend kvm --from-snapshot /tmp/docker-snap --report /tmp/restored.json -- sh -c 'docker ps -q | wc -l; docker run --rm --network none local/built' 2>/tmp/err)"; code=$?
check_all "restored with its daemon ready: the running container and the built image are there" '[ "$code" = 0 ] \
    && [ "$(echo $out)" = "1 built-by-a-run-step" ] && grep -q "\"start\": \"snapshot\"" /tmp/restored.json'
[ "$code" = 0 ] || sed 's/^/INFO   /' /tmp/err
tr -d '\n ' < /tmp/restored.json | grep -o '"agentReady","ns":[0-9]*' | sed 's/^/INFO restored: /'
check_all "stopped and restored sandboxes leave no scratch disk behind" '[ -z "$(ls -A "$scratch")" ]'

# Through the egress proxy: dockerd asks the proxy, which refuses a registry that is not allowlisted.
ip link set lo up
hyperctl run --backend kvm --docker --net allow:127.0.0.1:9 --report /tmp/proxy.json -- docker pull registry.example.org/library/busybox > /dev/null 2>/tmp/err; code=$?
check_all "dockerd goes through the egress proxy, which refuses an unlisted registry" '[ "$code" != 0 ] && grep -q "registry.example.org" /tmp/proxy.json && grep -q "\"allowed\": false" /tmp/proxy.json'
[ "$code" != 0 ] && grep -q "registry.example.org" /tmp/proxy.json || sed 's/^/INFO   /' /tmp/err

finish
