#!/usr/bin/env python3
"""The fleet benchmark's driver (bench/fleet.sh builds, then runs it):
N real kites polling one fake ECS endpoint whose ECS calls share one token
bucket, as an account's do in a region; or, with --source cloud-map, the
same fleet discovering the tasks as the instances of an AWS Cloud Map
service (the fake's Cloud Map, not throttled).

    fleet.py --kite BIN --cluster BIN --out OUT.json N...
                                  one run per fleet size N, each row added
                                  to OUT.json as soon as it is measured
    fleet.py --report OUT.json    the markdown table of OUT.json

A run: examples/fleet_cluster starts with --tasks tasks of family `fleet`
over --instances container instances; N kites start over --spread seconds,
each on its own loopback address (127.0.1.1, 127.0.1.2, ...), logging JSON
to its own file. Then the driver waits until every kite is ready (its
targets hold all the tasks), measures a --steady window, starts one task and
waits until every kite has it, stops one task (desiredStatus STOPPED) and
waits until every kite has dropped it; each wait is bounded.

What each kite routes to comes from its log (`target added` and `target
removed` at info, timestamped by kite): no polling of the kites. A kite
"lost targets" when, once ready, it dropped a task that was still running
(any but the stopped one, or that one before it stopped) or its targets
went empty. Calls are counted by the fake (`stats`), RSS read from
/proc/PID/status (VmRSS) and /proc/PID/smaps_rollup (Pss) at the end of the
steady window.
"""
import argparse
import ctypes
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime

CLK_TCK = os.sysconf("SC_CLK_TCK")
LIBC = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1
POLL = 0.25
"""Seconds between two reads of the kites' logs."""
SAMPLE = 2.0
"""Seconds between two `stats` samples kept in the results."""


def log(msg):
    print(f"fleet: {msg}", file=sys.stderr, flush=True)


def die_with_parent():
    """In the child before exec: its own process group, and SIGTERM when
    the driver dies, even by SIGKILL (no kite outlives a run)."""
    os.setsid()
    LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def cpu_seconds(pid):
    """User + system CPU seconds of a process, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except OSError:
        return None


def memory_kib(pid):
    """(VmRSS, Pss) in KiB, or None once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
        with open(f"/proc/{pid}/smaps_rollup") as f:
            pss = next(int(l.split()[1]) for l in f if l.startswith("Pss:"))
        return rss, pss
    except (OSError, StopIteration):
        return None


def parse_time(text):
    """kite's RFC 3339 UTC timestamp as Unix seconds (fractions past
    microseconds dropped)."""
    head, _, frac = text.rstrip("Z").partition(".")
    stamp = datetime.fromisoformat(head + "+00:00").timestamp()
    return stamp + (float("0." + frac[:6]) if frac else 0.0)


class FakeCluster:
    """examples/fleet_cluster, spoken to over its stdin and stdout."""

    def __init__(self, binary, args, work):
        self.proc = subprocess.Popen(
            [binary, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=open(os.path.join(work, "fleet_cluster.err"), "w"),
            text=True, preexec_fn=die_with_parent)
        self.env = {}
        for line in self.proc.stdout:
            line = line.strip()
            if line == "ready":
                break
            key, _, value = line.partition("=")
            self.env[key] = value
        else:
            raise RuntimeError("fleet_cluster exited before it was ready")

    def ask(self, command):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline().strip()
        if not reply or reply.startswith("error"):
            raise RuntimeError(f"fleet_cluster: {command!r}: {reply or 'no answer'}")
        return reply

    def stats(self):
        return json.loads(self.ask("stats"))

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Kite:
    """One kite process, and what its log says it routes to."""

    def __init__(self, index, binary, args, env, work, source):
        self.addr = f"127.0.{1 + index // 250}.{1 + index % 250}"
        self.log_path = os.path.join(work, f"kite-{index}.log")
        out = open(self.log_path, "w")
        select = (["--cloud-map", "fleet/app"] if source == "cloud-map"
                  else ["--cluster", "fleet", "--family", "fleet", "--name", "app"])
        argv = [binary, "proxy", *select,
                "--listen-addr", self.addr, "--admin-addr", f"{self.addr}:9901",
                "--log-format", "json", *args]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT, env=env,
                                     preexec_fn=die_with_parent)
        out.close()
        self.started_at = time.time()
        self.log = open(self.log_path)
        self.partial = ""
        self.targets = set()  # (port, backend, task)
        self.added = {}  # task -> first time kite added it
        self.removed = {}  # task -> last time kite removed it
        self.ready_at = None
        self.lost = []  # (time, task or "(empty)")
        self.failed_rounds = 0
        self.other_lines = 0

    def tasks(self):
        return {t for _, _, t in self.targets}

    def read(self, run):
        """Applies the log lines written since the last read."""
        chunk = self.log.read()
        if not chunk:
            return
        lines = (self.partial + chunk).split("\n")
        self.partial = lines.pop()
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                self.other_lines += 1
                continue
            self.apply(event, run)

    def apply(self, event, run):
        message = event.get("message", "")
        if message.startswith("discovery round failed"):
            self.failed_rounds += 1
            return
        if message not in ("target added", "target removed"):
            return
        at = parse_time(event["timestamp"])
        task = event["task"]
        key = (event["port"], event["backend"], task)
        if message == "target added":
            self.targets.add(key)
            self.added.setdefault(task, at)
            if self.ready_at is None and len(self.tasks()) >= run.initial_tasks:
                self.ready_at = at
            return
        self.targets.discard(key)
        self.removed[task] = at
        if self.ready_at is None:
            return
        stopped = task == run.stopped_task and run.stopped_at is not None
        if not stopped or at < run.stopped_at:
            self.lost.append((at, task))
        if not self.targets:
            self.lost.append((at, "(empty)"))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()

    def reap(self, deadline):
        try:
            self.proc.wait(max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Run:
    """One fleet size, start to finish."""

    def __init__(self, opts, size, work):
        self.opts = opts
        self.size = size
        self.work = work
        self.initial_tasks = opts.tasks
        self.new_task_id = None
        self.stopped_task = None
        self.stopped_at = None
        self.samples = []  # (time, stats)
        self.kites = []
        self.fake = None

    def kite_env(self):
        env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
        env.update(self.fake.env)
        return env

    def poll(self):
        """Reads every kite's log, and samples the fake's counters now and
        then."""
        for kite in self.kites:
            kite.read(self)
        now = time.time()
        if not self.samples or now - self.samples[-1][0] >= SAMPLE:
            self.samples.append((now, self.fake.stats()))

    def wait_for(self, done, timeout):
        """Polls until done() or timeout seconds; returns whether done."""
        deadline = time.time() + timeout
        while True:
            self.poll()
            if done():
                return True
            if time.time() >= deadline:
                return False
            if all(k.proc.poll() is not None for k in self.kites):
                return done()
            time.sleep(POLL)

    def start(self):
        o = self.opts
        self.fake = FakeCluster(o.cluster, ["--tasks", str(o.tasks), "--instances",
                                            str(o.instances), "--rate", str(o.rate),
                                            "--burst", str(o.burst), "--source", o.source],
                                 self.work)
        env = self.kite_env()
        self.t_start = time.time()
        for i in range(self.size):
            due = self.t_start + o.spread * i / self.size
            while time.time() < due:
                self.poll()
                time.sleep(min(POLL, max(0.0, due - time.time())))
            self.kites.append(Kite(i, o.kite, o.kite_args, env, self.work, o.source))
        time.sleep(1)
        dead = [k for k in self.kites if k.proc.poll() is not None]
        if len(dead) == len(self.kites):
            with open(dead[0].log_path) as f:
                tail = f.read()[-2000:]
            raise RuntimeError(f"every kite exited at once; {dead[0].log_path}:\n{tail}")

    def measure(self):
        """The whole run; returns its row of raw figures."""
        self.start()
        all_ready = self.wait_for(lambda: all(k.ready_at for k in self.kites),
                                  self.opts.ready_timeout)
        log(f"{self.size} kites: {sum(1 for k in self.kites if k.ready_at)} ready "
            f"{time.time() - self.t_start:.0f} s after the first start")
        row = {"kites": self.size, "all_ready": all_ready,
               "ready_when_steady_began": sum(1 for k in self.kites if k.ready_at)}
        row.update(self.steady())
        row.update(self.new_task())
        row.update(self.stopped_task_leaves())
        t_end, s_end = time.time(), self.fake.stats()
        self.poll()
        row["timeline_s"]["end"] = t_end - self.t_start
        row.update({
            "ready": sum(1 for k in self.kites if k.ready_at),
            "ready_s": sorted(k.ready_at - self.t_start for k in self.kites if k.ready_at),
            "ready_after_own_start_s": sorted(k.ready_at - k.started_at for k in self.kites
                                              if k.ready_at),
            "run_s": t_end - self.t_start,
            "run_ecs_per_s": s_end["ecs"] / (t_end - self.t_start),
            "run_cloud_map_per_s": s_end.get("cloud_map", 0) / (t_end - self.t_start),
            "run_throttled": s_end["ecs_throttled"] / max(1, s_end["ecs"]),
            "run_stats": s_end,
            "lost": {f"{i} ({k.addr})": [[at - self.t_start, task] for at, task in k.lost]
                     for i, k in enumerate(self.kites) if k.lost},
            "failed_rounds": sum(k.failed_rounds for k in self.kites),
            "log_lines_not_json": sum(k.other_lines for k in self.kites),
            "exited": {str(i): k.proc.returncode for i, k in enumerate(self.kites)
                       if k.proc.poll() is not None},
            "samples": [[t - self.t_start, s["ecs"], s["ecs_throttled"], s["ec2"],
                         s.get("cloud_map", 0)] for t, s in self.samples],
        })
        return row

    def steady(self):
        """The steady window: calls, CPU, failed rounds, and memory at its
        end."""
        self.poll()
        t0, s0 = time.time(), self.fake.stats()
        cpu0 = [cpu_seconds(k.proc.pid) for k in self.kites]
        fake_cpu0 = cpu_seconds(self.fake.proc.pid)
        failed0 = sum(k.failed_rounds for k in self.kites)
        self.wait_for(lambda: False, self.opts.steady)
        t1, s1 = time.time(), self.fake.stats()
        cpu1 = [cpu_seconds(k.proc.pid) for k in self.kites]
        fake_cpu1 = cpu_seconds(self.fake.proc.pid)
        failed1 = sum(k.failed_rounds for k in self.kites)
        memory = [memory_kib(k.proc.pid) for k in self.kites]
        log(f"{self.size} kites: steady window done")
        secs = t1 - t0
        calls = s1["ecs"] - s0["ecs"]
        throttled = s1["ecs_throttled"] - s0["ecs_throttled"]
        kite_cpu = sum(b - a for a, b in zip(cpu0, cpu1) if a is not None and b is not None)
        return {
            "timeline_s": {"steady": [t0 - self.t_start, t1 - self.t_start]},
            "steady_s": secs,
            "steady_ecs_per_s": calls / secs,
            "steady_ecs_ok_per_s": (calls - throttled) / secs,
            "steady_throttled": throttled / max(1, calls),
            "steady_ecs_by_op": {op: n - s0["ecs_by_op"].get(op, 0)
                                 for op, n in s1["ecs_by_op"].items()},
            "steady_ec2": s1["ec2"] - s0["ec2"],
            "steady_cloud_map_per_s": (s1.get("cloud_map", 0) - s0.get("cloud_map", 0)) / secs,
            "steady_cloud_map_by_op": {op: n - s0.get("cloud_map_by_op", {}).get(op, 0)
                                       for op, n in s1.get("cloud_map_by_op", {}).items()},
            "steady_failed_rounds": failed1 - failed0,
            "rss_kib": [m[0] for m in memory if m],
            "pss_kib": [m[1] for m in memory if m],
            "kite_cpu_per_s": kite_cpu / secs,
            "fake_cpu_per_s": (fake_cpu1 - fake_cpu0) / secs,
        }

    def new_task(self):
        """Starts one task; times it into every kite."""
        added_at = time.time()
        task = self.fake.ask("add")
        self.wait_for(lambda: all(task in k.tasks() for k in self.kites),
                      self.opts.reach_timeout)
        reach = [k.added[task] - added_at for k in self.kites if task in k.added]
        log(f"{self.size} kites: the new task reached {len(reach)}")
        self.new_task_id = task
        return {"new_task": task, "new_task_at_s": added_at - self.t_start,
                "new_task_reach_s": sorted(reach), "new_task_never": self.size - len(reach)}

    def stopped_task_leaves(self):
        """Stops one of the first tasks, which every ready kite holds; times
        it out of every kite that held it."""
        holders = [k for k in self.kites if k.ready_at]
        held = set.intersection(*(k.tasks() for k in holders)) if holders else set()
        candidates = sorted(held - {self.new_task_id})
        if not candidates:
            return {"stopped_task": None, "stopped_task_leave_s": [], "stopped_task_never": 0}
        self.stopped_task = task = candidates[0]
        self.stopped_at = time.time()
        self.fake.ask(f"stop {task}")
        self.wait_for(lambda: all(task not in k.tasks() for k in holders),
                      self.opts.reach_timeout)
        leave = [k.removed[task] - self.stopped_at for k in holders if task not in k.tasks()]
        log(f"{self.size} kites: the stopped task left {len(leave)} of {len(holders)}")
        return {"stopped_task": task, "stopped_task_at_s": self.stopped_at - self.t_start,
                "stopped_task_leave_s": sorted(leave),
                "stopped_task_never": len(holders) - len(leave)}

    def close(self):
        for kite in self.kites:
            kite.stop()
        deadline = time.time() + 10
        for kite in self.kites:
            kite.reap(deadline)
        if self.fake:
            self.fake.close()


def fmt_s(values, never, total):
    if never:
        return f"{never} of {total} never"
    return f"{max(values):.1f}" if values else "-"


def table(rows, source="ecs"):
    cloud_map = source == "cloud-map"
    lines = [
        f"| kites | {'Cloud Map' if cloud_map else 'ECS'} calls/s demanded (steady) | throttled "
        "| new task reached every kite (s) "
        "| stopped task left every kite (s) | kites that lost targets | never ready "
        "| fleet RSS (MiB total, per kite) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    notes = []
    for r in rows:
        n = r["kites"]
        rss = sum(r["rss_kib"]) / 1024
        per = rss / max(1, len(r["rss_kib"]))
        demanded = r["steady_cloud_map_per_s"] if cloud_map else r["steady_ecs_per_s"]
        lines.append(
            f"| {n} | {demanded:.1f} | {100 * r['steady_throttled']:.0f}% "
            f"| {fmt_s(r['new_task_reach_s'], r['new_task_never'], n)} "
            f"| {fmt_s(r['stopped_task_leave_s'], r['stopped_task_never'], n)} "
            f"| {len(r['lost'])} | {n - r['ready']} | {rss:.0f} ({per:.1f}) |")
        ready = r["ready_s"]
        if cloud_map:
            head = (f"- {n} kites: whole run {r['run_s']:.0f} s, "
                    f"{r['run_cloud_map_per_s']:.1f} Cloud Map calls/s, "
                    f"{r['run_stats']['ecs']} ECS calls; steady: "
                    + ", ".join(f"{v / r['steady_s']:.2f} {op}/s"
                                for op, v in sorted(r["steady_cloud_map_by_op"].items())))
        else:
            head = (f"- {n} kites: whole run {r['run_s']:.0f} s, {r['run_ecs_per_s']:.1f} ECS "
                    f"calls/s, {100 * r['run_throttled']:.0f}% throttled, "
                    f"{r['run_stats']['ec2']} EC2 calls; steady: "
                    f"{r['steady_ecs_ok_per_s']:.1f} ECS calls/s answered, "
                    f"{r['steady_ec2']} EC2 calls")
        notes.append(
            head + "; all ready "
            + (f"{max(ready):.0f} s after the first start" if ready and not n - r["ready"]
               else "never")
            + (f" (the steady window began with {r['ready_when_steady_began']} ready)"
               if r.get("ready_when_steady_began", n) < n else "")
            + f"; {r['failed_rounds']} failed rounds; kites' CPU {100 * r['kite_cpu_per_s']:.0f}%"
            f" of a core, the fake's {100 * r['fake_cpu_per_s']:.0f}%; fleet PSS "
            f"{sum(r['pss_kib']) / 1024:.0f} MiB"
            + (f"; {len(r['exited'])} kites exited" if r["exited"] else ""))
    return "\n".join(lines + [""] + notes)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--report", metavar="OUT.json")
    p.add_argument("--kite")
    p.add_argument("--cluster", help="the fleet_cluster example's binary")
    p.add_argument("--out")
    p.add_argument("--kite-args", default="", help="more kite flags, one shell-quoted string")
    p.add_argument("--tasks", type=int, default=99)
    p.add_argument("--instances", type=int, default=10)
    p.add_argument("--rate", type=float, default=20)
    p.add_argument("--burst", type=float, default=50)
    p.add_argument("--source", choices=("ecs", "cloud-map"), default="ecs",
                   help="where the kites discover the tasks")
    p.add_argument("--spread", type=float, default=5, help="seconds over which kites start")
    p.add_argument("--steady", type=float, default=60)
    p.add_argument("--ready-timeout", type=float, default=300)
    p.add_argument("--reach-timeout", type=float, default=300)
    p.add_argument("--keep-logs", action="store_true",
                   help="keep each run's directory of kite logs")
    p.add_argument("sizes", nargs="*", type=int)
    opts = p.parse_args()
    if opts.report:
        with open(opts.report) as f:
            results = json.load(f)
            print(table(results["rows"], results["config"].get("source", "ecs")))
        return
    if not (opts.kite and opts.cluster and opts.out and opts.sizes):
        p.error("want --kite, --cluster, --out and fleet sizes (or --report)")
    if max(opts.sizes) > 250 * 250:
        p.error("at most 62,500 kites (127.0.1.1 to 127.0.250.250)")
    opts.kite_args = shlex.split(opts.kite_args)
    version = subprocess.run([opts.kite, "--version"], capture_output=True, text=True).stdout
    results = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{os.cpu_count()} cores, {os.uname().release}",
        "kite": {"bin": opts.kite, "version": version.strip(), "args": opts.kite_args},
        "config": {k: getattr(opts, k) for k in ("tasks", "instances", "rate", "burst", "spread",
                                                 "steady", "ready_timeout", "reach_timeout",
                                                 "source")},
        "rows": [],
    }
    # SIGTERM and SIGHUP end the run as ctrl-C does: through the finally
    # below, which stops every process the run started.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: sys.exit(130))
    for size in opts.sizes:
        work = tempfile.mkdtemp(prefix=f"kite-fleet-{size}.")
        run = Run(opts, size, work)
        log(f"{size} kites: starting ({work})")
        try:
            row = run.measure()
        finally:
            run.close()
            if opts.keep_logs:
                log(f"{size} kites: the logs stay in {work}")
            else:
                shutil.rmtree(work, ignore_errors=True)
        results["rows"].append(row)
        with open(opts.out, "w") as f:
            json.dump(results, f, indent=1)
        log(f"{size} kites: done, in {opts.out}")
    print(f"kite: {version.strip()} ({opts.kite}{' ' + ' '.join(opts.kite_args) if opts.kite_args else ''})")
    print()
    print(table(results["rows"], opts.source))


if __name__ == "__main__":
    main()
