#!/usr/bin/env bash
# Regenerates build/symbol-order.txt: the functions kite runs while it
# starts, discovers, proxies and answers its admin endpoint, for the release
# link (scripts/build-image.sh) to place first and next to each other.
#
#   scripts/symbol-order.sh        # needs valgrind, curl and openssl
#
# Why: the kernel maps a binary's code in 64 KiB blocks around each page a
# process touches (fault-around), so where the functions kite runs lie among
# the many it never runs (most of the AWS SDK, clap's error paths, the
# Docker client of `kite attach`) decides how much of the binary stays
# resident. Gathered together, they take a few blocks instead of most of
# them. Stale names (after code changes) are only skipped by the linker:
# the order then helps less, and this script brings it up to date.
#
# How: the release binary, unstripped (the same code, with its symbol
# names), runs under valgrind's callgrind in front of the fake cluster of
# examples/bench_cluster.rs (behind a TLS relay, scripts/tls-relay.py, as
# the AWS APIs are) and a Python HTTP server, through start-up,
# discovery rounds, small and large requests, new and kept-alive
# connections, the admin endpoint and a graceful shutdown. Every function
# that ran is listed, the costliest first.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in valgrind curl python3 openssl; do
    command -v "$tool" >/dev/null || { echo "symbol-order.sh: needs $tool" >&2; exit 2; }
done
. scripts/lib.sh
new_work kite-order

# The release build as build-image.sh makes it (the same flags, so the same
# code and symbol names), but unstripped.
cp "$(KITE_BUILD_ONLY=1 KITE_STRIP=0 scripts/build-image.sh)" "$work/kite"
cargo build --locked --example bench_cluster >&2

# A server with a small and a large file, and the fake cluster leading to it.
mkdir -p "$work/www"
head -c 1024 /dev/urandom >"$work/www/1k"
head -c 4194304 /dev/urandom >"$work/www/4m"
python3 -m http.server --protocol HTTP/1.1 --bind 127.0.0.1 --directory "$work/www" 17081 >/dev/null 2>&1 &
pids+=($!)
start_cluster cluster --port 8081=127.0.0.1:17081

# The AWS APIs speak HTTPS: a TLS relay in front of the fake, with a
# certificate from a CA of its own that kite is told to trust
# (SSL_CERT_FILE).
ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
openssl req -x509 "${ec[@]}" -days 1 -subj /CN=kite-order-ca \
    -keyout "$work/ca-key.pem" -out "$work/ca.pem" 2>/dev/null
openssl req "${ec[@]}" -subj /CN=127.0.0.1 -keyout "$work/key.pem" -out "$work/req.pem" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >"$work/ext.cnf"
openssl x509 -req -in "$work/req.pem" -CA "$work/ca.pem" -CAkey "$work/ca-key.pem" \
    -CAcreateserial -days 1 -extfile "$work/ext.cnf" -out "$work/cert.pem" 2>/dev/null
fake="$(sed -n 's#^AWS_ENDPOINT_URL=http://##p' "$work/cluster.env")"
python3 scripts/tls-relay.py 17443 "$fake" "$work/cert.pem" "$work/key.pem" &
pids+=($!)
sed -i 's#^AWS_ENDPOINT_URL=.*#AWS_ENDPOINT_URL=https://127.0.0.1:17443#' "$work/cluster.env"
echo "SSL_CERT_FILE=$work/ca.pem" >>"$work/cluster.env"

admin=127.0.0.1:17901
env $(grep = "$work/cluster.env") valgrind --tool=callgrind --demangle=no \
    --callgrind-out-file="$work/callgrind.out" "$work/kite" proxy --family bench --name app \
    --listen-addr 127.0.0.1 --admin-addr "$admin" --refresh 1s --port-map 17082:8081 \
    2>"$work/kite.log" &
kite_pid=$!
pids+=($kite_pid)
for _ in $(seq 600); do "$work/kite" health --admin-addr "$admin" >/dev/null 2>&1 && break; sleep 0.1; done
"$work/kite" health --admin-addr "$admin" >/dev/null || { cat "$work/kite.log" >&2; exit 1; }
for _ in $(seq 100); do curl -sf -o /dev/null http://127.0.0.1:17082/1k && break; sleep 0.2; done

url=http://127.0.0.1:17082
for _ in 1 2 3; do
    curl -sf -o /dev/null "$url/1k" "$url/1k" "$url/1k" "$url/4m" "$url/1k"
    curl -sf -o /dev/null -H 'Connection: close' "$url/1k"
    curl -sf -o /dev/null "$url/4m"
    curl -sf -o /dev/null "http://$admin/metrics" "http://$admin/targets" "http://$admin/readyz"
    sleep 2 # discovery rounds
done
kill -TERM "$kite_pid"
wait "$kite_pid" || true

mkdir -p build
python3 scripts/callgrind-functions.py "$work/callgrind.out" >build/symbol-order.txt
echo "symbol-order.sh: $(wc -l <build/symbol-order.txt) functions ran: build/symbol-order.txt" >&2
