#!/usr/bin/env python3
"""The measurements of bench/run.sh, which starts the servers and proxies
and hands their ports and PIDs over in a JSON file:

    bench.py SETUP.json OUT.json      measure every contender, RUNS times
    bench.py --memory SETUP.json OUT.json
                                      the memory of freshly started proxies,
                                      one run, added to OUT.json's runs
    bench.py --report OUT.json        the markdown table for BENCHMARKS.md

Each run takes each measure of every contender in turn, back to back (the
order rotates from run to run), so the contenders share whatever the
machine is doing at the time; the report
gives the median of the runs with min and max, and each median's ratio to
"direct" (no proxy) and to HAProxy. A before/after run (run.sh with
KITE_BASELINE_BIN) has one contender more, "kite-before", the binary before
the change run the same way as "kite"; the report then adds the ratio of
kite's median to kite-before's, with the range of the per-run ratios, and
marks a measure where kite's median is worse than kite-before's worst run
(and more than 1% from its median).
"""
import itertools
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def machine_counters():
    """Whole-machine counters: busy CPU seconds over all cores (every state
    but idle and iowait: user, system, interrupts, kernel workers) and TCP
    segments sent. Per request they show the work a request costs wherever
    it lands, which a proxy's own CPU time misses: loopback TCP charges the
    receiver's share to the sender, and kernel workers belong to no one."""
    with open("/proc/stat") as f:
        jiffies = [int(v) for v in f.readline().split()[1:]]
    with open("/proc/net/snmp") as f:
        tcp = [line.split() for line in f if line.startswith("Tcp:")]
    segments = int(tcp[1][tcp[0].index("OutSegs")])
    return (sum(jiffies) - jiffies[3] - jiffies[4]) / CLK_TCK, segments


def cpu_seconds(pid):
    """User + system CPU seconds of a process, all its threads."""
    if pid is None:
        return 0.0
    if not os.path.exists(f"/proc/{pid}"):
        raise RuntimeError(f"the proxy (pid {pid}) is not running any more")
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid):
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE


def anon_bytes(pid):
    """The anonymous share of a process's RSS (heap, stacks): what it holds
    itself, where the rest is pages of its binary and libraries mapped
    from the page cache, whose count follows how those files entered the
    cache (this kernel maps whole large folios at a fault)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no RssAnon in /proc/{pid}/status")


def iperf(ports, streams, reverse, seconds):
    """iperf3 with `streams` streams to each of `ports` (a server each), the
    clients all at once: several servers carry streams that one server
    thread alone would bound (Debian 12's iperf3 3.12 runs every stream of
    a test in one thread). Returns the summed Gbit/s and bytes."""
    def args(port):
        return (["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(seconds),
                 "-P", str(streams), "-J"] + (["-R"] if reverse else []))
    # iperf3's server closes its listening socket and opens a new one around
    # each test, and a connection attempt can land in between (seen once in
    # some thirty runs): a refused connection is tried again, all clients at
    # once, said on stderr.
    for attempt in range(3):
        procs = [subprocess.Popen(args(port), stdout=subprocess.PIPE, text=True)
                 for port in ports]
        results = [json.loads(proc.communicate(timeout=seconds + 30)[0]) for proc in procs]
        errors = [(port, data["error"]) for port, data in zip(ports, results) if "error" in data]
        if not errors or attempt == 2 or any("unable to connect" not in e for _, e in errors):
            break
        print(f"iperf3 to ports {ports}: {errors}; trying again", file=sys.stderr)
        time.sleep(1)
    if errors:
        port, error = errors[0]
        raise RuntimeError(f"iperf3 to port {port}: {error}")
    ends = [data["end"]["sum_received"] for data in results]
    return sum(e["bits_per_second"] for e in ends) / 1e9, sum(e["bytes"] for e in ends)


def to_ms(text):
    for unit, scale in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * scale
    return float(text)


def wrk(port, path, seconds, connections, close=False, threads=1):
    args = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency",
            f"http://127.0.0.1:{port}{path}"]
    if close:
        args[1:1] = ["-H", "Connection: close"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 30).stdout
    result = {"errors": 0}
    for line in out.splitlines():
        parts = line.split()
        if line.startswith("Requests/sec:"):
            result["rps"] = float(parts[1])
        elif len(parts) == 2 and parts[0] in ("50%", "99%"):
            result["p" + parts[0][:-1]] = to_ms(parts[1])
        elif "requests in" in line:
            result["requests"] = int(parts[0])
        elif line.strip().startswith("Socket errors:") or line.strip().startswith("Non-2xx"):
            result["errors"] += sum(int(p.strip(",")) for p in parts if p.strip(",").isdigit())
    if "rps" not in result:
        raise RuntimeError(f"wrk printed no Requests/sec:\n{out}")
    return result


class Hogs:
    """A busy loop per core, for as long as the `with` block lasts: the
    proxy then shares every core with work that never sleeps, as a sidecar
    shares its task's CPUs with the application it serves."""

    def __init__(self, count):
        self.count = count
        self.procs = []

    def __enter__(self):
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                      for _ in range(self.count)]
        if self.procs:
            time.sleep(0.3)  # spinning, not starting, when the measure begins
        return self

    def __exit__(self, *exc):
        for proc in self.procs:
            proc.kill()
            proc.wait()
        self.procs = []


def idle_connections(port, pid, count):
    """RSS of `pid` before and with `count` idle connections through it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    time.sleep(0.5)
    before, anon = rss_bytes(pid), anon_bytes(pid)
    socks, failed = [], 0
    for _ in range(count):
        s = socket.socket()
        try:
            s.connect(("127.0.0.1", port))
            socks.append(s)
        except OSError:
            failed += 1
            s.close()
    time.sleep(2)
    # Still open (a proxy that refused or dropped them shows here).
    alive = 0
    for s in socks:
        s.setblocking(False)
        try:
            if s.recv(1) == b"":
                continue
        except BlockingIOError:
            pass
        except OSError:
            continue
        alive += 1
    during = rss_bytes(pid)
    for s in socks:
        s.close()
    time.sleep(1)
    return {"rss_idle": before, "anon_idle": anon, "rss_with": during, "alive": alive, "failed": failed,
            "per_conn": (during - before) / max(alive, 1)}


def metric(admin, name):
    """The sum of a Prometheus metric's samples on kite's /metrics."""
    import urllib.request
    text = urllib.request.urlopen(f"http://{admin}/metrics", timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def discovery_cost(c, seconds=30):
    """CPU and wall time per discovery round of kite (and of the fake
    endpoint answering it), with no traffic."""
    rounds = "kite_discovery_rounds_total"
    spent = "kite_discovery_round_duration_seconds_sum"
    r0, d0 = metric(c["admin"], rounds), metric(c["admin"], spent)
    cpu0, fake0 = cpu_seconds(c["pid"]), cpu_seconds(c.get("fake_pid"))
    time.sleep(seconds)
    n = metric(c["admin"], rounds) - r0
    if n <= 0:
        raise RuntimeError(f"{c['name']}: no discovery round in {seconds} s")
    return {
        "rounds": n,
        "kite_cpu_ms_per_round": (cpu_seconds(c["pid"]) - cpu0) / n * 1e3,
        "wall_ms_per_round": (metric(c["admin"], spent) - d0) / n * 1e3,
        "fake_cpu_ms_per_round": (cpu_seconds(c.get("fake_pid")) - fake0) / n * 1e3,
    }


def measure(setup):
    """Each measure in turn, taken of every contender one after another
    (their order rotating from run to run), so that the figures compared
    are taken seconds apart: the machine's background load drifts over
    minutes, and a contender measured in a slower minute would lose for
    that alone."""
    seconds = setup["seconds"]
    runs = []
    contenders = setup["contenders"]
    # (key, streams per server, the contender's field with its port or
    # ports): 1 and 4 streams to one server, and 4 streams to 4 servers.
    iperfs = [("iperf_1", 1, "iperf_port"), ("iperf_4", 4, "iperf_port"),
              ("iperf_4x1", 1, "iperf_ports")]
    # wrk with one thread, and keep-alive 1 KiB also with two: the load
    # generator's own share of the two cores changes which proxy keeps up
    # better, so both shapes are reported. The last field is the busy loops
    # that run beside (one per core, or none): a few requests at a time
    # while every core is taken is what a sidecar sees when the
    # application beside it computes.
    # Keep-alive 1 KiB also with 64 connections, one wrk thread: an
    # outside benchmark saw kite's p99 at 1.17-1.20x HAProxy's there while
    # req/s and CPU per request were level.
    wrks = [
        ("ka_1k", "/1k", 32, False, 1, 0),
        ("ka_1k_t2", "/1k", 32, False, 2, 0),
        ("ka_1k_c64", "/1k", 64, False, 1, 0),
        ("ka_1m", "/1m", 8, False, 1, 0),
        ("close_1k", "/1k", 16, True, 1, 0),
        ("ka_1k_busy", "/1k", 2, False, 1, len(os.sched_getaffinity(0))),
    ]
    for r in range(setup["runs"]):
        order = contenders[r % len(contenders):] + contenders[: r % len(contenders)]
        run = {c["name"]: {} for c in order}
        for (name, streams, field), reverse in itertools.product(iperfs, (False, True)):
            key = f"{name}{'_rev' if reverse else ''}"
            for c in order:
                if c.get("only") is not None or field not in c:
                    continue
                ports = c[field] if isinstance(c[field], list) else [c[field]]
                m, pid = run[c["name"]], c.get("pid")
                cpu0 = cpu_seconds(pid)
                gbps, moved = iperf(ports, streams, reverse, seconds)
                cpu = cpu_seconds(pid) - cpu0
                m[key] = gbps
                m[key + "_cpu_per_gib"] = cpu / (moved / 2**30) if pid else None
        for key, path, conns, close, threads, hogs in wrks:
            for c in order:
                only = c.get("only")
                if only is not None and key not in only:
                    continue
                m, pid = run[c["name"]], c.get("pid")
                with Hogs(hogs):
                    cpu0 = cpu_seconds(pid)
                    busy0, segs0 = machine_counters()
                    w = wrk(c["http_port"], path, seconds, conns, close, threads)
                    busy1, segs1 = machine_counters()
                    cpu = cpu_seconds(pid) - cpu0
                m[key + "_rps"] = w["rps"]
                m[key + "_p50"] = w.get("p50")
                m[key + "_p99"] = w.get("p99")
                m[key + "_errors"] = w["errors"]
                m[key + "_cpu_us_per_req"] = cpu / w["requests"] * 1e6 if pid else None
                if not hogs:
                    m[key + "_machine_us_per_req"] = (busy1 - busy0) / w["requests"] * 1e6
                    m[key + "_segs_per_req"] = (segs1 - segs0) / w["requests"]
        for c in order:
            m, pid = run[c["name"]], c.get("pid")
            if pid and c.get("only") is None:
                m["rss_after_mib"] = rss_bytes(pid) / 2**20
            print(f"run {r + 1} {c['name']}: " + ", ".join(
                f"{k}={v:.3g}" for k, v in m.items() if isinstance(v, float)), flush=True)
        runs.append(run)
    return runs


ROWS = [
    ("iperf_1", "iperf3 1 stream, client→server (Gbit/s)", "high"),
    ("iperf_1_rev", "iperf3 1 stream, server→client (Gbit/s)", "high"),
    ("iperf_4", "iperf3 4 streams, client→server (Gbit/s)", "high"),
    ("iperf_4_rev", "iperf3 4 streams, server→client (Gbit/s)", "high"),
    ("iperf_1_cpu_per_gib", "proxy CPU s per GiB, 1 stream", "low"),
    ("iperf_4_cpu_per_gib", "proxy CPU s per GiB, 4 streams", "low"),
    ("iperf_4x1", "iperf3 4 streams to 4 servers, client→server (Gbit/s)", "high"),
    ("iperf_4x1_rev", "iperf3 4 streams to 4 servers, server→client (Gbit/s)", "high"),
    ("iperf_4x1_cpu_per_gib", "proxy CPU s per GiB, 4 streams to 4 servers", "low"),
    ("ka_1k_rps", "keep-alive 1 KiB: req/s", "high"),
    ("ka_1k_p50", "keep-alive 1 KiB: p50 (ms)", "low"),
    ("ka_1k_p99", "keep-alive 1 KiB: p99 (ms)", "low"),
    ("ka_1k_cpu_us_per_req", "keep-alive 1 KiB: proxy CPU µs per request", "low"),
    ("ka_1k_machine_us_per_req", "keep-alive 1 KiB: CPU µs per request, whole machine", "low"),
    ("ka_1k_segs_per_req", "keep-alive 1 KiB: TCP segments sent per request, whole machine", "low"),
    ("ka_1k_t2_rps", "keep-alive 1 KiB, wrk with 2 threads: req/s", "high"),
    ("ka_1k_t2_p99", "keep-alive 1 KiB, wrk with 2 threads: p99 (ms)", "low"),
    ("ka_1k_t2_cpu_us_per_req", "keep-alive 1 KiB, wrk with 2 threads: proxy CPU µs per request", "low"),
    ("ka_1k_c64_rps", "keep-alive 1 KiB, 64 connections: req/s", "high"),
    ("ka_1k_c64_p99", "keep-alive 1 KiB, 64 connections: p99 (ms)", "low"),
    ("ka_1k_c64_cpu_us_per_req", "keep-alive 1 KiB, 64 connections: proxy CPU µs per request", "low"),
    ("ka_1m_rps", "keep-alive 1 MiB: req/s", "high"),
    ("ka_1m_p99", "keep-alive 1 MiB: p99 (ms)", "low"),
    ("close_1k_rps", "new connection per request: req/s", "high"),
    ("close_1k_p99", "new connection per request: p99 (ms)", "low"),
    ("close_1k_cpu_us_per_req", "new connection per request: proxy CPU µs per request", "low"),
    ("close_1k_machine_us_per_req", "new connection per request: CPU µs per request, whole machine", "low"),
    ("close_1k_segs_per_req", "new connection per request: TCP segments sent per request, whole machine", "low"),
    ("ka_1k_busy_rps", "keep-alive 1 KiB, 2 connections, a busy loop per core beside: req/s", "high"),
    ("ka_1k_busy_p99", "keep-alive 1 KiB, 2 connections, a busy loop per core beside: p99 (ms)", "low"),
    ("ka_1k_busy_cpu_us_per_req", "keep-alive 1 KiB, 2 connections, a busy loop per core beside: proxy CPU µs per request", "low"),
    ("rss_after_mib", "proxy RSS idle after the runs (MiB)", "low"),
    ("rss_idle_mib", "proxy RSS idle, freshly started (MiB)", "low"),
    ("anon_idle_mib", "proxy RSS idle, freshly started, anonymous share (MiB)", "low"),
    ("bytes_per_idle_conn", "proxy RSS per idle connection, freshly started (bytes)", "low"),
    ("idle_conns_alive", "idle connections held", "high"),
]


def memory(setup):
    """One run of the memory figures, for proxies started just before
    (run.sh restarts them for each run): RSS idle, then RSS growth per idle
    connection. Measured on fresh processes, since memory kept from earlier
    load would hide what idle connections cost."""
    run = {}
    for c in setup["contenders"]:
        if not c.get("pid"):
            continue
        idle = idle_connections(c["http_port"], c["pid"], setup["idle_connections"])
        run[c["name"]] = {
            "rss_idle_mib": idle["rss_idle"] / 2**20,
            "anon_idle_mib": idle["anon_idle"] / 2**20,
            "bytes_per_idle_conn": idle["per_conn"],
            "idle_conns_alive": float(idle["alive"]),
        }
        print(f"memory {c['name']}: {run[c['name']]}", flush=True)
    return run


def fmt(v):
    if v is None:
        return "–"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}"


# Before/after columns, each shown when the table has both contenders: the
# ratio of the medians, then the range of the ratios run by run (each run
# measures the two seconds apart).
BEFORE_AFTER = [
    ("kite", "kite-before", "kite ÷ kite-before"),
    ("kite-5000-tasks", "kite-before-5000-tasks", "kite-5000-tasks ÷ kite-before-5000-tasks"),
]
# Further ratios shown the same way, without a verdict: the two proxies
# each held to one thread (bench/run.sh's workers phase); the routing
# policies and the twin (the run's own spread between two like kites)
# against the plain kite (the discovery phase).
PAIRS = [
    ("kite-1-thread", "haproxy-1-thread", "kite-1-thread ÷ haproxy-1-thread"),
    ("kite-least-conn-zone", "kite", "kite-least-conn-zone ÷ kite"),
    ("kite-twin", "kite", "kite-twin ÷ kite"),
]


def report(results):
    runs = results["runs"]
    names = [c["name"] for c in results["setup"]["contenders"]]
    judged = [p for p in BEFORE_AFTER if p[0] in names and p[1] in names]
    pairs = judged + [p for p in PAIRS if p[0] in names and p[1] in names]
    out = []
    head = ("| measure | " + " | ".join(names) + " | kite ÷ direct | kite ÷ HAProxy |"
            + "".join(f" {title} |" for _, _, title in pairs))
    out.append(head)
    out.append("|---" * (len(names) + 3 + len(pairs)) + "|")
    worse = []
    for key, label, better in ROWS:
        medians, ranges, cells = {}, {}, []
        for n in names:
            vals = [r[n][key] for r in runs if r.get(n, {}).get(key) is not None]
            if not vals:
                cells.append("–")
                continue
            med = statistics.median(vals)
            medians[n] = med
            ranges[n] = (min(vals), max(vals))
            cells.append(f"{fmt(med)} ({fmt(min(vals))}–{fmt(max(vals))})")
        if not medians:
            continue
        def ratio(a, b):
            if a in medians and b in medians and medians[b]:
                return f"{medians[a] / medians[b]:.2f}×"
            return "–"
        def before_after(a, b):
            if a not in medians or b not in medians or not medians[b]:
                return "–"
            by_run = [r[a][key] / r[b][key] for r in runs
                      if r.get(a, {}).get(key) is not None and r.get(b, {}).get(key)]
            cell = f"{medians[a] / medians[b]:.2f}×"
            if by_run:
                cell += f" ({min(by_run):.2f}–{max(by_run):.2f})"
            # Worse beyond the run's own spread: the new binary's median
            # lies past the old one's worst run, and by more than 1% (the
            # segment counts vary in the third digit).
            if (a, b) not in [(x, y) for x, y, _ in judged]:
                return cell
            lo, hi = ranges[b]
            past = (medians[a] < lo) if better == "high" else (medians[a] > hi)
            if past and abs(medians[a] / medians[b] - 1) > 0.01:
                cell += " **worse**"
                worse.append(f"{label} ({a})")
            return cell
        out.append(f"| {label} | " + " | ".join(cells)
                   + f" | {ratio('kite', 'direct')} | {ratio('kite', 'haproxy')} |"
                   + "".join(f" {before_after(a, b)} |" for a, b, _ in pairs))
    if judged:
        out.append("")
        out.append("Before/after: the ratio of the medians, then the range of the ratios run by run; "
                   "**worse** marks a median past the worst run of the binary before, and more than 1% from its median. "
                   + (f"Worse: {'; '.join(worse)}." if worse else "No measure is worse."))
    for name, d in results.get("discovery", {}).items():
        out.append("")
        out.append(f"{name}: a discovery round took {d['kite_cpu_ms_per_round']:.1f} ms of kite's "
                   f"CPU ({d['wall_ms_per_round']:.0f} ms wall, {d['rounds']:.0f} rounds timed); "
                   f"the fake endpoint spent {d['fake_cpu_ms_per_round']:.0f} ms of CPU answering each.")
    return "\n".join(out)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--report":
        with open(sys.argv[2]) as f:
            print(report(json.load(f)))
        return 0
    if len(sys.argv) == 4 and sys.argv[1] == "--memory":
        with open(sys.argv[2]) as f:
            setup = json.load(f)
        out = sys.argv[3]
        results = {"setup": setup, "runs": []}
        if os.path.exists(out):
            with open(out) as f:
                results = json.load(f)
        results["runs"].append(memory(setup))
        with open(out, "w") as f:
            json.dump(results, f, indent=1)
        return 0
    if len(sys.argv) != 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    with open(sys.argv[1]) as f:
        setup = json.load(f)
    discovery = {c["name"]: discovery_cost(c) for c in setup["contenders"] if c.get("admin")}
    print(f"discovery: {discovery}", flush=True)
    runs = measure(setup)
    with open(sys.argv[2], "w") as f:
        json.dump({"setup": setup, "discovery": discovery, "runs": runs}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
