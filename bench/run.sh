#!/usr/bin/env bash
# kite against HAProxy and against no proxy at all, in one run, on loopback.
#
#   bench/run.sh                   # RUNS=5 runs of BENCH_SECONDS=5 s per measurement
#   RUNS=3 BENCH_SECONDS=10 bench/run.sh
#   DISCOVERY_RUNS=15 bench/run.sh # runs of the discovery phase (default 15)
#   KITE_BASELINE_BIN=/path/to/old/kite bench/run.sh
#                                  # before/after: that binary runs as a contender
#                                  # more, kite-before, the same way as kite
#   BENCH_PHASES="memory main" bench/run.sh
#                                  # only some phases (default: memory main
#                                  # workers discovery)
#   KITE_BIN=/path/to/kite bench/run.sh # that binary as kite (no build)
#
# Contenders: direct (the servers themselves: the limit), HAProxy in mode
# tcp with option splice-auto, and kite (the image's static release binary) running its real
# discovery against the project's fake ECS endpoint (examples/bench_cluster.rs),
# whose one task leads to the same servers: nginx (1 KiB and 1 MiB files) and
# iperf3. bench/bench.py measures (iperf3, wrk, wrk beside a busy loop per
# core, CPU from /proc, RSS with IDLE_CONNECTIONS=5000 idle connections) and
# writes the table; the results land in bench/results/ and the table on
# stdout, for BENCHMARKS.md.
#
# With KITE_BASELINE_BIN, a second binary (the one before a change) runs
# beside kite in the memory, main and discovery phases, as kite-before on
# 27081, 27201 and 27211-27214 (and kite-before-5000-tasks on 47081 in the
# discovery phase), interleaved with the others; the tables add kite's
# ratio to it. Both binaries must take the same command line. (In the
# discovery phase the fake endpoint then answers two kites' rounds, and the
# CPU it reports per round counts both.)
#
# Installs haproxy, nginx-light, wrk and iperf3 from Debian when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS="${RUNS:-5}"
# The discovery phase compares two kites whose p99 differ by less than one
# run's noise: it takes more runs (each 2 x BENCH_SECONDS) than the others.
DISCOVERY_RUNS="${DISCOVERY_RUNS:-15}"
SECS="${BENCH_SECONDS:-5}"
IDLE="${IDLE_CONNECTIONS:-5000}"
PHASES=" ${BENCH_PHASES:-memory main workers discovery} "
phase() { [[ "$PHASES" == *" $1 "* ]]; }
baseline="${KITE_BASELINE_BIN:-}"
if [ -n "$baseline" ]; then
    baseline="$(realpath "$baseline")"
    [ -x "$baseline" ] || { echo "KITE_BASELINE_BIN: $baseline is not an executable" >&2; exit 2; }
fi

missing=()
for tool in haproxy:haproxy nginx:nginx-light wrk:wrk iperf3:iperf3; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update && apt-get install -y "${missing[@]}"
fi

# kite: the binary the image ships (static, release profile), built by
# scripts/build-image.sh so the two share one build. The fake cluster is a
# dev build: it is not what is measured.
kite="${KITE_BIN:-$(KITE_BUILD_ONLY=1 scripts/build-image.sh)}"
cargo build --locked --example bench_cluster

. scripts/lib.sh
new_work kite-bench

# The servers: nginx (one worker) and iperf3, on 127.0.0.1.
mkdir -p "$work/www"
head -c 1024 /dev/urandom >"$work/www/1k"
head -c 1048576 /dev/urandom >"$work/www/1m"
# nginx's workers run as an unprivileged user: let them read the files.
chmod -R a+rX "$work"
cat >"$work/nginx.conf" <<EOF
daemon off;
worker_processes 1;
worker_rlimit_nofile 40000;
pid $work/nginx.pid;
error_log $work/nginx.err warn;
events { worker_connections 20000; }
http {
    access_log off;
    keepalive_requests 100000000;
    client_header_timeout 600s;
    server {
        listen 127.0.0.1:18081 backlog=4096;
        root $work/www;
    }
}
EOF
nginx -c "$work/nginx.conf" -p "$work" &
pids+=($!)
iperf3 -s -B 127.0.0.1 -p 15201 >/dev/null &
pids+=($!)
# Four more, one stream each, for four streams that no one server thread
# carries all of (iperf3 3.12 runs all streams of a test in one thread).
for i in 1 2 3 4; do
    iperf3 -s -B 127.0.0.1 -p "1521$i" >/dev/null &
    pids+=($!)
done

# The fake cluster.
start_cluster cluster --port 8081=127.0.0.1:18081 --port 5201=127.0.0.1:15201 \
    --port 5211=127.0.0.1:15211 --port 5212=127.0.0.1:15212 \
    --port 5213=127.0.0.1:15213 --port 5214=127.0.0.1:15214

# Starts `kite proxy` (the binary $launch_bin, or else $kite) for the fake
# cluster whose environment ENV_FILE holds, with the admin endpoint on ADMIN
# and the further flags given, and waits up to TRIES tenths of a second for
# it to be ready. Its PID lands in $launched.
# (An assignment before the call, KITE_THREADS=1 say, reaches kite.)
launch_kite() {
    local env_file="$1" admin="$2" tries="$3" bin="${launch_bin:-$kite}"
    shift 3
    env $(grep = "$env_file") "$bin" proxy --family bench --name app --listen-addr 127.0.0.1 \
        --admin-addr "$admin" --log-level warn "$@" &
    launched=$!
    pids+=($launched)
    for _ in $(seq "$tries"); do "$bin" health --admin-addr "$admin" >/dev/null 2>&1 && break; sleep 0.1; done
    "$bin" health --admin-addr "$admin" >/dev/null
}

# kite: real discovery, listening on 28081, 25201 and 25211-25214.
start_kite() {
    launch_kite "$work/cluster.env" 127.0.0.1:29901 100 \
        --port-map 28081:8081,25201:5201,25211:5211,25212:5212,25213:5213,25214:5214 \
        --max-connections 20000
    kite_pid=$launched
}

# kite-before (with KITE_BASELINE_BIN): the same, from the binary before the
# change, on 27081, 27201 and 27211-27214.
start_kite_before() {
    launch_bin="$baseline" launch_kite "$work/cluster.env" 127.0.0.1:27901 100 \
        --port-map 27081:8081,27201:5201,27211:5211,27212:5212,27213:5213,27214:5214 \
        --max-connections 20000
    before_pid=$launched
}

# HAProxy: mode tcp, splice-auto, on 38081, 35201 and 35211-35214.
cat >"$work/haproxy.cfg" <<EOF
global
    # The hard open-file limit here is 20,000; HAProxy needs about two per
    # connection plus pipes for a quarter of them, and refuses to start if
    # maxconn asks for more.
    maxconn 7500
defaults
    mode tcp
    option splice-auto
    timeout connect 3s
    timeout client 1h
    timeout server 1h
listen http
    bind 127.0.0.1:38081
    server nginx 127.0.0.1:18081
listen iperf
    bind 127.0.0.1:35201
    server iperf 127.0.0.1:15201
EOF
# The four servers behind a listener each. HAProxy hands each listener's
# first connection to the same thread, which put all four streams on one;
# the listeners are spread over its threads instead (kite evens out the
# streams by itself).
for i in 1 2 3 4; do
    printf 'listen iperf%s\n    bind 127.0.0.1:3521%s thread %s\n    server iperf%s 127.0.0.1:1521%s\n' \
        "$i" "$i" "$(( (i - 1) % $(nproc) + 1 ))" "$i" "$i" >>"$work/haproxy.cfg"
done
start_haproxy() {
    haproxy -db -f "$work/haproxy.cfg" &
    haproxy_pid=$!
    pids+=($haproxy_pid)
    for _ in $(seq 50); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:38081/1k)" = 200 ] && break
        kill -0 "$haproxy_pid" || { echo "haproxy did not start" >&2; exit 1; }
        sleep 0.1
    done
}

# Stops a proxy this script started, and forgets its PID (which the
# system may hand to another process afterwards).
stop() {
    kill "$1"
    wait "$1" 2>/dev/null || true
    local kept=()
    for pid in "${pids[@]}"; do [ "$pid" = "$1" ] || kept+=("$pid"); done
    pids=("${kept[@]}")
}

# Starts the proxies (both, or with KITE_BASELINE_BIN all three), checks
# that every port serves, and writes the setup bench.py reads.
start_proxies() {
    local ports="18081 28081 38081" before=""
    start_kite
    if [ -n "$baseline" ]; then
        start_kite_before
        ports="$ports 27081"
        before=",
  {\"name\": \"kite-before\", \"http_port\": 27081, \"iperf_port\": 27201, \"pid\": $before_pid,
   \"iperf_ports\": [27211, 27212, 27213, 27214]}"
    fi
    start_haproxy
    for port in $ports; do
        code="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/1k")"
        [ "$code" = 200 ] || { echo "GET /1k on port $port answered $code, not 200" >&2; exit 1; }
    done
    cat >"$work/setup.json" <<EOF
{"runs": $RUNS, "seconds": $SECS, "idle_connections": $IDLE,
 "contenders": [
  {"name": "direct", "http_port": 18081, "iperf_port": 15201,
   "iperf_ports": [15211, 15212, 15213, 15214]},
  {"name": "haproxy", "http_port": 38081, "iperf_port": 35201, "pid": $haproxy_pid,
   "iperf_ports": [35211, 35212, 35213, 35214]},
  {"name": "kite", "http_port": 28081, "iperf_port": 25201, "pid": $kite_pid,
   "iperf_ports": [25211, 25212, 25213, 25214]}$before
 ]}
EOF
}

# Stops the proxies start_proxies started.
stop_proxies() {
    stop "$kite_pid"
    [ -z "$baseline" ] || stop "$before_pid"
    stop "$haproxy_pid"
}

mkdir -p bench/results
stamp="$(date -u +%Y%m%dT%H%M%SZ)"

# Memory first, on proxies started afresh for each run: what they keep
# from earlier load would hide what idle connections cost.
if phase memory; then
    for _ in $(seq "$RUNS"); do
        start_proxies
        python3 bench/bench.py --memory "$work/setup.json" "bench/results/$stamp-memory.json"
        stop_proxies
    done
fi

start_proxies
if phase main; then
    python3 bench/bench.py "$work/setup.json" "bench/results/$stamp.json"
fi

# The thread count: kite with one proxy thread beside kite with the
# default, one per core; and both proxies held to one thread (HAProxy with
# nbthread 1), where no connection is placed on or moves between threads.
if phase workers; then
    KITE_THREADS=1 launch_kite "$work/cluster.env" 127.0.0.1:59901 100 --port-map 58081:8081
    kite1_pid=$launched
    # (On 31082: below the ephemeral ports, which an open connection
    # may hold when this starts.)
    sed -e 's/^global$/global\n    nbthread 1/' -e 's/127.0.0.1:38081/127.0.0.1:31082/' \
        -e '/^listen iperf/,$d' "$work/haproxy.cfg" >"$work/haproxy-1-thread.cfg"
    haproxy -db -f "$work/haproxy-1-thread.cfg" &
    haproxy1_pid=$!
    pids+=($haproxy1_pid)
    for _ in $(seq 50); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:31082/1k)" = 200 ] && break
        sleep 0.1
    done
    only='"only": ["ka_1k", "ka_1k_t2", "ka_1k_c64", "ka_1m", "close_1k"]'
    cat >"$work/setup-workers.json" <<EOF
{"runs": $RUNS, "seconds": $SECS, "idle_connections": 0,
 "contenders": [
  {"name": "kite", "http_port": 28081, "pid": $kite_pid, $only},
  {"name": "kite-1-thread", "http_port": 58081, "pid": $kite1_pid, $only},
  {"name": "haproxy-1-thread", "http_port": 31082, "pid": $haproxy1_pid, $only}
 ]}
EOF
    python3 bench/bench.py "$work/setup-workers.json" "bench/results/$stamp-workers.json"
    stop "$kite1_pid"
    stop "$haproxy1_pid"
fi

# The discovery load, once the proxies above are measured (its fake endpoint
# keeps a core busy): a second fake cluster of 5,000 tasks on 500 instances
# (all leading to nginx), and a second kite refreshing every second in front
# of it on 48081. Its keep-alive figures beside the first kite's show what
# discovery costs the data path; bench.py also times its rounds. A third
# kite, started with it and the same as the first (on 28082), is the
# control: how far two kites that differ in nothing differ in one run.
# With KITE_BASELINE_BIN, the binary before the change also refreshes the
# 5,000 tasks every second (kite-before-5000-tasks, on 47081).
if phase discovery; then
    start_cluster cluster5k --port 8081=127.0.0.1:18081 --tasks 5000 --instances 500
    cluster5k_pid=$cluster_pid
    launch_kite "$work/cluster5k.env" 127.0.0.1:49901 300 --port-map 48081:8081 --refresh 1s
    kite5k_pid=$launched
    launch_kite "$work/cluster.env" 127.0.0.1:29902 100 --port-map 28082:8081 --max-connections 20000
    twin_pid=$launched
    # The routing policies on (the fake's tasks are in bench-zone-a):
    # least connections among the own zone's targets.
    launch_kite "$work/cluster.env" 127.0.0.1:29903 100 --port-map 28083:8081 --max-connections 20000 \
        --balance least-conn --zone-affinity --zone bench-zone-a --zone-min-targets 1
    routing_pid=$launched
    before5k=""
    if [ -n "$baseline" ]; then
        launch_bin="$baseline" launch_kite "$work/cluster5k.env" 127.0.0.1:47901 300 \
            --port-map 47081:8081 --refresh 1s
        before5k=",
      {\"name\": \"kite-before-5000-tasks\", \"http_port\": 47081, \"pid\": $launched, \"only\": [\"ka_1k\"],
       \"admin\": \"127.0.0.1:47901\", \"fake_pid\": $cluster5k_pid}"
    fi

    cat >"$work/setup-discovery.json" <<EOF
{"runs": $DISCOVERY_RUNS, "seconds": $SECS, "idle_connections": 0,
 "contenders": [
  {"name": "kite", "http_port": 28081, "pid": $kite_pid, "only": ["ka_1k"]},
  {"name": "kite-twin", "http_port": 28082, "pid": $twin_pid, "only": ["ka_1k"]},
  {"name": "kite-least-conn-zone", "http_port": 28083, "pid": $routing_pid, "only": ["ka_1k"]},
  {"name": "kite-5000-tasks", "http_port": 48081, "pid": $kite5k_pid, "only": ["ka_1k"],
   "admin": "127.0.0.1:49901", "fake_pid": $cluster5k_pid}$before5k
 ]}
EOF
    python3 bench/bench.py "$work/setup-discovery.json" "bench/results/$stamp-discovery.json"
fi

echo
echo "## $(date -u +%F) on $(nproc) cores ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)): $(uname -r), $(haproxy -v | head -1 | cut -d' ' -f1-3), $(nginx -v 2>&1), $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2), $(iperf3 --version | head -1 | cut -d' ' -f1-2), $("$kite" --version)${baseline:+; kite-before: $("$baseline" --version)}"
if phase main; then
    echo
    python3 bench/bench.py --report "bench/results/$stamp.json"
fi
# A further table: its title, then the table of results file PART (if that
# phase ran).
report() {
    phase "$2" || return 0
    printf '\n%s\n\n' "$1"
    python3 bench/bench.py --report "bench/results/$stamp-$2.json"
}
report "Memory, each proxy started afresh for each run ($IDLE idle connections):" memory
report "Proxy threads (kite-1-thread runs with --threads 1, haproxy-1-thread with nbthread 1):" workers
report "Discovery and routing beside traffic (keep-alive 1 KiB; kite-5000-tasks refreshes every second; kite-twin, started with it, is a second kite like the first; kite-least-conn-zone runs --balance least-conn --zone-affinity):" discovery
