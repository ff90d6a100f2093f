#!/usr/bin/env bash
# A fleet of kites against one ECS account's throttling, on loopback: N real
# kite processes (one per consumer task, as sidecars run) polling the
# project's fake ECS endpoint (examples/fleet_cluster.rs), whose ECS calls
# share one token bucket as an account's read APIs do in a region (about
# 20 calls/s, burst 50). bench/fleet.py drives and measures; one row per N:
# ECS calls/s demanded and the share throttled, how long a new task takes
# to reach every kite and a stopped one to leave every kite, kites that
# ever lost targets or never became ready, and the fleet's RSS.
#
#   bench/fleet.sh                       # FLEET_SIZES="50 100 200 300"
#   bench/fleet.sh 10 20                 # these sizes
#   FLEET_SIZES=10 FLEET_STEADY=20 bench/fleet.sh
#   KITE_ARGS="--refresh 10s" bench/fleet.sh
#                                        # more kite flags, for every kite
#   KITE_BIN=/path/to/kite bench/fleet.sh
#                                        # that binary (no build)
#   FLEET_CLUSTER_BIN=/path/to/fleet_cluster bench/fleet.sh
#                                        # that fake (no build: the example
#                                        # links kite's library, so a change
#                                        # under src/ rebuilds it, with LTO)
#   FLEET_SOURCE=cloud-map bench/fleet.sh
#                                        # the same fleet on AWS Cloud Map: the
#                                        # tasks are the instances of the fake's
#                                        # service fleet/app, each kite runs with
#                                        # --cloud-map fleet/app (not throttled)
#   FLEET_KEEP_LOGS=1 bench/fleet.sh      # keep every kite's log (JSON lines), per run
#                                        # in /tmp/kite-fleet-N.*
#   bench/fleet.py --report bench/results/STAMP-fleet.json
#                                        # the table again
#
# Further knobs, with their defaults: FLEET_TASKS=99 tasks of family
# `fleet` over FLEET_INSTANCES=10 container instances (99: with the task the
# run starts, 100, one ListTasks page, so that no second page shows up
# only while a new task spreads); FLEET_RATE=20 ECS
# calls/s, FLEET_BURST=50 (FLEET_RATE=0: no throttling); kites start over
# FLEET_SPREAD=5 s, as a deploy starts them; FLEET_READY_TIMEOUT=300 s for
# every kite to be ready, FLEET_STEADY=60 s of steady state, then
# FLEET_REACH_TIMEOUT=300 s each for a new task to reach every kite and for
# a stopped one to leave every kite. A run of one size takes about
# spread + ready + steady + both waits, and ends early when all are done.
#
# kite is the binary the image ships (static, release), built by
# scripts/build-image.sh as bench/run.sh builds it; the fake is a release
# build too, since it answers the whole fleet from one process. The
# results land in bench/results/STAMP-fleet.json and the table on stdout.
# Every process the run starts is in its own process group, killed by PID
# when the run ends (ctrl-C included), and dies with the driver.
set -euo pipefail
cd "$(dirname "$0")/.."

# One run at a time: every run's kites take the same loopback addresses,
# and two fleets on one machine would measure each other.
exec 9>/tmp/kite-fleet.lock
flock -n 9 || { echo "fleet.sh: another run holds /tmp/kite-fleet.lock" >&2; exit 1; }

sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || read -ra sizes <<<"${FLEET_SIZES:-50 100 200 300}"

kite="${KITE_BIN:-$(KITE_BUILD_ONLY=1 scripts/build-image.sh)}"
cluster="${FLEET_CLUSTER_BIN:-}"
if [ -z "$cluster" ]; then
    cargo build --locked --release --example fleet_cluster
    cluster=target/release/examples/fleet_cluster
fi

# Each kite holds a few descriptors and the driver one log per kite.
hard="$(ulimit -Hn)"
if [ "$hard" = unlimited ] || [ "$hard" -gt 65536 ]; then hard=65536; fi
ulimit -n "$hard"

keep=()
[ "${FLEET_KEEP_LOGS:-0}" != 1 ] || keep=(--keep-logs)

mkdir -p bench/results
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
exec python3 bench/fleet.py --kite "$kite" --cluster "$cluster" \
    --out "bench/results/$stamp-fleet.json" --kite-args "${KITE_ARGS:-}" \
    --tasks "${FLEET_TASKS:-99}" --instances "${FLEET_INSTANCES:-10}" \
    --rate "${FLEET_RATE:-20}" --burst "${FLEET_BURST:-50}" --spread "${FLEET_SPREAD:-5}" \
    --source "${FLEET_SOURCE:-ecs}" \
    --steady "${FLEET_STEADY:-60}" --ready-timeout "${FLEET_READY_TIMEOUT:-300}" \
    --reach-timeout "${FLEET_REACH_TIMEOUT:-300}" \
    "${keep[@]}" "${sizes[@]}"
