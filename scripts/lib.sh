# Shell functions shared by bench/run.sh and scripts/symbol-order.sh, which
# source this file from the repository's root.

# new_work NAME: a fresh scratch directory in $work; it, and every process
# whose PID is added to $pids, goes when the script exits.
new_work() {
    work="$(mktemp -d "/tmp/$1.XXXXXX")"
    pids=()
    trap cleanup EXIT
}

cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}

# start_cluster NAME ARGS...: examples/bench_cluster (the dev build) with
# ARGS, once it is ready; its PID lands in $cluster_pid and the environment
# kite needs in $work/NAME.env. It serves while its stdin, a pipe this
# shell holds open, stays open: until the script exits.
start_cluster() {
    local name="$1" fd
    shift
    mkfifo "$work/$name.in"
    target/debug/examples/bench_cluster "$@" <"$work/$name.in" >"$work/$name.env" &
    cluster_pid=$!
    pids+=($cluster_pid)
    exec {fd}>"$work/$name.in"
    for _ in $(seq 300); do grep -q '^ready$' "$work/$name.env" && break; sleep 0.1; done
    grep -q '^ready$' "$work/$name.env" || { echo "bench_cluster $* did not start" >&2; exit 1; }
}
