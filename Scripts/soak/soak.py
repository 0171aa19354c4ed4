#!/usr/bin/env python3
"""The soak (issue 15): one hub under mixed load for MINUTES, sampled from /proc, judged at the
end. Scripts/soak.sh is the entry point (it sets the open-file limit and the venv).

1. Starts the hub pinned to core 0 (`taskset -c 0`, `--threads 2`: both loops, so sessions
   move between loops on resume) with the per-address limits off (every client here is
   127.0.0.1), an apps file with a bearer token and webhooks to a receiver in this process,
   `--history-seconds 60` (so channel histories are full within the warm-up) and otherwise
   the defaults (30 s linger, 1 MiB session buffers, `--slow-consumer close`).
2. Samples the hub before any load: the descriptor baseline.
3. Runs `loadgen.py` pinned to core 1 for MINUTES (10,000 clients by default: see its doc),
   sampling the hub every SAMPLE seconds (10): RSS (VmRSS), open descriptors
   (/proc/PID/fd), CPU (utime + stime from /proc/PID/stat, % of one core), threads; and the
   load generator's CPU and its counts.
4. After the load generator has closed everything and exited: samples every 2 s for 60 s.
5. Stops the hub (SIGTERM: it must exit 0), writes soak.csv, soak.png and summary.json, and
   prints the checks:
   (a) RSS after warm-up grows less than 5 %: the warm-up is the first 20 % of the load (at
       least 60 s); the mean RSS of the first window after it is compared with the mean of
       the last window of the load, a window being 60 s, or a third of the post-warm-up
       time when that is shorter (a 2-minute run: 20 s, two samples each). Judged on runs
       of 10 minutes or more (SOAK_RSS_JUDGED_MINUTES; see RSS_JUDGED_MINUTES), printed on
       shorter ones;
   (b) open descriptors are back at the baseline within 30 s of the load generator's exit;
   (c) resumable sessions lost and duplicated no message: 0 offsets skipped or repeated on
       any channel, 0 numbered messages skipped (tracking.py), and every session that ended
       or lasted to the end had every offset published on its channels;
   (d) the hub stayed up and exited 0; the load was there (the clients open reached 90 % of
       the target); the load generator saw nothing unexpected (a client that failed to open,
       a close or error from the hub to a client that is not a slow consumer, a refused
       resume, an HTTP status other than the protocol's).
Exit status 0 when every check passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "Scripts", "bench"))

from benchlib import die_with_parent, fd_count, proc_status  # noqa: E402
from clients import APP_ID, KEY, SECRET, TOKEN  # noqa: E402
from halley_client import WebhookReceiver  # noqa: E402

CLK = os.sysconf("SC_CLK_TCK")
LISTEN = re.compile(r"halley listening on http://127\.0\.0\.1:(\d+) .*metrics on http://127\.0\.0\.1:(\d+)/metrics")
RSS_LIMIT_PCT = 5.0
# Check (a) is judged on runs of at least this many minutes. A shorter run cannot tell growth
# from warm-up: sessions linger 30 s after their clients go, and the hub keeps the end of a
# resumable session that did not expire for 10 minutes (to answer a late resume with its
# reason: LoopHub.endedReasons), so memory rises for the first minutes of any load with churn.
# The figure is printed either way.
RSS_JUDGED_MINUTES = float(os.environ.get("SOAK_RSS_JUDGED_MINUTES", 10))
FD_RETURN_S = 30
AFTER_S = 60


def log(msg=""):
    print(msg, flush=True)


class Proc:
    """CPU share of a process between two reads of /proc/PID/stat."""

    def __init__(self, pid):
        self.pid = pid
        self.prev = None

    def stat(self):
        with open(f"/proc/{self.pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return int(rest[11]) + int(rest[12]), int(rest[17])  # utime + stime, threads

    def cpu(self):
        """(% of one core since the last call, threads)."""
        ticks, threads = self.stat()
        now = time.monotonic()
        pct = 0.0
        if self.prev is not None:
            pct = 100.0 * (ticks - self.prev[0]) / CLK / max(1e-6, now - self.prev[1])
        self.prev = (ticks, now)
        return pct, threads


def metrics(port):
    """A few values of the hub's /metrics (summed over labels)."""
    out = collections.Counter()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("#") or not line.strip():
                    continue
                name, _, value = line.rpartition(" ")
                out[name.split("{")[0]] += float(value)
                out[name] = float(value)
    except (OSError, ValueError):
        pass
    return out


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def delivered(counts):
    return sum(counts.get(k, 0) for k in ("delivered", "plain delivered", "slow delivered"))


def opened(counts):
    return sum(v for k, v in counts.items() if k.startswith("opened transport ") or
               (k.startswith("opened ") and not k.startswith("opened transport ") and
                k not in ("opened ws-resumable", "opened sse", "opened poll")))


def log_summary(path):
    """Hub log lines by level, and the distinct error and warning lines (digits folded)."""
    levels = collections.Counter()
    distinct = collections.Counter()
    with open(path, errors="replace") as f:
        for line in f:
            parts = line.split(" ", 2)
            level = parts[1] if len(parts) > 2 else "?"
            levels[level] += 1
            if level in ("error", "warning", "fatal", "critical") or "error" in line.lower() or "fatal" in line.lower():
                distinct[re.sub(r"\d+", "N", parts[2] if len(parts) > 2 else line).strip()[:200]] += 1
    return levels, distinct


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("minutes", type=float, nargs="?", default=float(os.environ.get("SOAK_MINUTES", 30)))
    ap.add_argument("--bin", default=os.environ.get("HALLEY_BIN") or os.path.join(REPO, ".build", "release", "halley"))
    ap.add_argument("--out", default=os.environ.get("SOAK_OUT") or os.path.join(REPO, ".test-out", "soak"))
    ap.add_argument("--connections", type=int, default=int(os.environ.get("SOAK_CONNECTIONS", 10000)))
    ap.add_argument("--rate", type=float, default=float(os.environ.get("SOAK_RATE", 50)), help="publishes a second")
    ap.add_argument("--sample", type=float, default=float(os.environ.get("SOAK_SAMPLE_SECONDS", 10)))
    ap.add_argument("--hub-cpu", default=os.environ.get("SOAK_HUB_CPU", "0"))
    ap.add_argument("--load-cpu", default=os.environ.get("SOAK_LOAD_CPU", "1"))
    ap.add_argument("--threads", type=int, default=int(os.environ.get("SOAK_HUB_THREADS", 2)))
    args = ap.parse_args()
    duration = args.minutes * 60
    warmup = max(0.2 * duration, 60.0)
    if duration < warmup + 30:
        sys.exit(f"soak: {args.minutes} minutes leave no time after the {warmup:.0f} s warm-up: 1.5 minutes at least")
    if not os.access(args.bin, os.X_OK):
        sys.exit(f"soak: no hub binary at {args.bin} (build it: swift build -c release; or --bin / HALLEY_BIN)")
    os.makedirs(args.out, exist_ok=True)
    for name in ("soak.csv", "soak.png", "summary.json", "hub.log", "loadgen.log", "loadgen-progress.json",
                 "loadgen-result.json"):
        if os.path.exists(os.path.join(args.out, name)):
            os.remove(os.path.join(args.out, name))
    try:
        os.sched_setaffinity(0, {int(args.load_cpu)})  # this driver and its webhook receiver beside the load
    except (OSError, ValueError):
        pass

    hooks = WebhookReceiver()
    work = tempfile.mkdtemp(prefix="soak-")
    os.makedirs(os.path.join(work, "public"))
    apps = os.path.join(work, "apps.json")
    with open(apps, "w") as f:
        json.dump({"apps": [{"id": APP_ID, "key": KEY, "secret": SECRET, "token": TOKEN, "client_events_per_second": 100,
                             "webhooks": [{"url": hooks.url, "events": ["channel_occupied", "channel_vacated",
                                                                        "member_added", "member_removed"]}]}]}, f)
    hub_cmd = ["taskset", "-c", args.hub_cpu, args.bin, "--port", "0", "--threads", str(args.threads),
               "--public", os.path.join(work, "public"), "--config", apps, "--metrics-port", "0", "--log-level", "info",
               "--max-connections-per-address", "0", "--session-opens-per-second", "0",
               "--max-lingering-per-address", "0", "--history-seconds", "60"]
    log(f"soak: {args.minutes:g} minutes, {args.connections} clients, {args.rate:g} publishes/s, "
        f"sampling every {args.sample:g} s, warm-up {warmup:.0f} s; output in {args.out}")
    log("soak: hub: " + " ".join(hub_cmd))
    hub_log_path = os.path.join(args.out, "hub.log")
    hub_log = open(hub_log_path, "wb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HALLEY_")}
    hub = subprocess.Popen(hub_cmd, stdout=hub_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                           preexec_fn=die_with_parent)
    port = mport = None
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and hub.poll() is None:
        with open(hub_log_path, errors="replace") as f:
            m = LISTEN.search(f.read())
        if m:
            port, mport = int(m.group(1)), int(m.group(2))
            break
        time.sleep(0.05)
    if port is None:
        hub.kill()
        with open(hub_log_path, errors="replace") as f:
            sys.exit("soak: the hub did not start:\n" + f.read()[-3000:])
    log(f"soak: hub pid {hub.pid} on port {port} (metrics {mport}), pinned to core {args.hub_cpu}")
    hubp = Proc(hub.pid)

    rows = []
    csv_path = os.path.join(args.out, "soak.csv")
    fields = ["t_s", "phase", "hub_rss_mb", "hub_fds", "hub_cpu_pct", "hub_threads", "load_cpu_pct", "load_rss_mb",
              "heap_in_use_mb", "heap_free_mb", "clients_open", "hub_connections", "hub_sessions", "delivered_per_s", "opens_per_s", "publishes", "errors"]
    csv_file = open(csv_path, "w", newline="")
    writer = csv.DictWriter(csv_file, fieldnames=fields)
    writer.writeheader()
    state = {"t0": time.monotonic(), "prev": None, "loadp": None, "load_pid": None}

    def sample(phase):
        now = time.monotonic()
        fds = fd_count(hub.pid)  # first: the metrics request below is a connection too
        rss = proc_status(hub.pid)["VmRSS"] / 1024
        cpu, threads = hubp.cpu()
        lcpu = lrss = 0.0
        if state["loadp"] is not None:
            try:
                lcpu, _ = state["loadp"].cpu()
                lrss = proc_status(state["load_pid"])["VmRSS"] / 1024
            except OSError:
                pass
        prog = read_json(os.path.join(args.out, "loadgen-progress.json")) or {}
        counts = prog.get("counts", {})
        mt = metrics(mport)
        cur = (now, delivered(counts), opened(counts))
        dps = ops = 0.0
        if state["prev"] is not None and now > state["prev"][0]:
            dt = now - state["prev"][0]
            dps, ops = max(0.0, (cur[1] - state["prev"][1]) / dt), max(0.0, (cur[2] - state["prev"][2]) / dt)
        state["prev"] = cur
        row = {"t_s": round(now - state["t0"], 1), "phase": phase, "hub_rss_mb": round(rss, 2), "hub_fds": fds,
               "hub_cpu_pct": round(cpu, 1), "hub_threads": threads, "load_cpu_pct": round(lcpu, 1),
               "load_rss_mb": round(lrss, 1),
               "heap_in_use_mb": round(mt.get('halley_heap_bytes{state="in_use"}', 0) / 2**20, 2),
               "heap_free_mb": round(mt.get('halley_heap_bytes{state="free"}', 0) / 2**20, 2),
               "clients_open": prog.get("open_total", 0) if phase != "after load" else 0,
               "hub_connections": int(mt.get("halley_connections_open", 0)), "hub_sessions": int(mt.get("halley_sessions", 0)),
               "delivered_per_s": round(dps, 1), "opens_per_s": round(ops, 1), "publishes": counts.get("publishes", 0),
               "errors": prog.get("errors", 0)}
        rows.append(row)
        writer.writerow(row)
        csv_file.flush()
        return row

    # -- baseline
    time.sleep(1)
    hubp.cpu()
    for _ in range(3):
        time.sleep(1)
        state["t0"] = time.monotonic() + 1
        base = sample("baseline")
    fd_baseline = base["hub_fds"]
    log(f"soak: baseline: {fd_baseline} descriptors, RSS {base['hub_rss_mb']:.1f} MB")

    # -- load
    load_cmd = ["taskset", "-c", args.load_cpu, sys.executable, os.path.join(HERE, "loadgen.py"), "--port", str(port),
                "--duration", str(duration), "--connections", str(args.connections), "--rate", str(args.rate),
                "--out", args.out]
    log("soak: load: " + " ".join(load_cmd))
    load_log = open(os.path.join(args.out, "loadgen.log"), "wb")
    state["t0"] = time.monotonic()
    load = subprocess.Popen(load_cmd, stdout=load_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            preexec_fn=die_with_parent)
    state["loadp"], state["load_pid"] = Proc(load.pid), load.pid
    state["loadp"].cpu()
    hub_died = None
    next_at = state["t0"] + args.sample
    limit = state["t0"] + duration + 90
    last_print = 0
    while load.poll() is None:
        if hub.poll() is not None:
            hub_died = hub.returncode
            load.send_signal(signal.SIGTERM)
            break
        if time.monotonic() > limit:
            log("soak: the load generator did not finish within 90 s of the end of the load: killed")
            load.kill()
            break
        if time.monotonic() >= next_at:
            t = time.monotonic() - state["t0"]
            phase = "warm-up" if t < warmup else ("load" if t <= duration else "stopping")
            r = sample(phase)
            next_at += args.sample
            if time.monotonic() - last_print >= 60 or t < args.sample * 1.5:
                last_print = time.monotonic()
                log(f"soak: {t / 60:5.1f} min  RSS {r['hub_rss_mb']:7.1f} MB (heap {r['heap_in_use_mb']:.1f} in use, {r['heap_free_mb']:.1f} free)  fds {r['hub_fds']:6d}  hub CPU "
                    f"{r['hub_cpu_pct']:5.1f} %  load CPU {r['load_cpu_pct']:5.1f} %  clients {r['clients_open']:6d}  "
                    f"delivered {r['delivered_per_s']:7.0f}/s  errors {r['errors']}")
        time.sleep(0.2)
    load_rc = load.wait()
    t_end = time.monotonic()
    with open(os.path.join(args.out, "loadgen.log"), errors="replace") as f:
        load_out = f.read()

    # -- after the load
    fd_back_s = None
    end_deadline = t_end + AFTER_S
    while time.monotonic() < end_deadline and hub.poll() is None:
        r = sample("after load")
        if fd_back_s is None and r["hub_fds"] <= fd_baseline:
            fd_back_s = time.monotonic() - t_end
        time.sleep(max(0.0, 2 - (time.monotonic() - t_end) % 2))
    final_metrics = metrics(mport)
    if hub_died is None and hub.poll() is not None:
        hub_died = hub.returncode
    fd_end = rows[-1]["hub_fds"]
    rc = None
    if hub_died is None:
        hub.send_signal(signal.SIGTERM)
        try:
            rc = hub.wait(timeout=30)
        except subprocess.TimeoutExpired:
            hub.kill()
            rc = "killed after 30 s"
    csv_file.close()
    hooks.server.shutdown()

    # -- verdicts
    res = read_json(os.path.join(args.out, "loadgen-result.json")) or {}
    c = collections.Counter(res.get("counts", {}))
    failures = []
    load_rows = [r for r in rows if r["phase"] in ("warm-up", "load")]
    post = [r for r in load_rows if r["t_s"] >= warmup]
    window = min(60.0, (duration - warmup) / 3)
    first = [r for r in post if r["t_s"] < warmup + window] or post[:1]
    last = [r for r in post if r["t_s"] > duration - window] or post[-1:]
    rss_first = statistics.mean(r["hub_rss_mb"] for r in first) if first else 0
    rss_last = statistics.mean(r["hub_rss_mb"] for r in last) if last else 0
    growth = 100.0 * (rss_last - rss_first) / rss_first if rss_first else 0.0
    rss_max = max((r["hub_rss_mb"] for r in post), default=0)
    rss_ok = bool(first and last) and growth < RSS_LIMIT_PCT
    rss_judged = args.minutes >= RSS_JUDGED_MINUTES
    if not rss_ok and rss_judged:
        failures.append(f"(a) RSS grew {growth:+.2f} % after warm-up (limit {RSS_LIMIT_PCT:g} %)")
    rss_verdict = ("pass" if rss_ok else "FAIL") if rss_judged else f"not judged (a run under {RSS_JUDGED_MINUTES:g} minutes)"
    fd_ok = fd_back_s is not None and fd_back_s <= FD_RETURN_S
    if not fd_ok:
        failures.append(f"(b) descriptors not back at the baseline {fd_baseline} within {FD_RETURN_S} s "
                        f"(after {AFTER_S} s: {fd_end})")
    lost, dup, gaps = c["lost"], c["duplicated"], c["seq gaps"]
    if lost or dup or gaps:
        failures.append(f"(c) resumable sessions: {lost} lost, {dup} duplicated, {gaps} seq gaps")
    plain_lost = c["plain lost in session"] + c["plain duplicated in session"]
    if plain_lost:
        failures.append(f"(c) plain sessions lost {c['plain lost in session']} and duplicated "
                        f"{c['plain duplicated in session']} messages within one connection")
    if c["delivered"] == 0 or c["tail checks"] == 0:
        failures.append("(c) no delivery on resumable sessions was checked")
    if hub_died is not None:
        failures.append(f"(d) the hub exited during the run (status {hub_died})")
    elif rc != 0:
        failures.append(f"(d) the hub exited with {rc} on SIGTERM")
    peak_open = max((r["clients_open"] for r in rows), default=0)
    if peak_open < 0.9 * args.connections:
        failures.append(f"(d) the load did not build up: at most {peak_open} clients open of {args.connections}")
    if load_rc != 0 or not res:
        failures.append(f"(d) the load generator failed (status {load_rc}):\n{load_out[-3000:]}")
    errs = res.get("errors", {})
    if errs:
        failures.append(f"(d) the load generator saw {sum(errs.values())} unexpected events (listed above): "
                        + ", ".join(f"{k} {v}" for k, v in sorted(errs.items(), key=lambda kv: -kv[1])[:5]))

    levels, distinct = log_summary(hub_log_path)
    load_cpu = [r["load_cpu_pct"] for r in load_rows if r["t_s"] > 0]
    hub_cpu = [r["hub_cpu_pct"] for r in load_rows if r["t_s"] > 0]
    conns = opened(c)
    fd_peak = max(r["hub_fds"] for r in rows)
    summary = {
        "minutes": args.minutes, "connections_target": args.connections, "rate": args.rate, "bin": args.bin,
        "warmup_s": warmup, "window_s": window,
        "rss_mb": {"baseline": base["hub_rss_mb"], "first_window_mean": round(rss_first, 2),
                   "last_window_mean": round(rss_last, 2), "growth_pct": round(growth, 2), "verdict": rss_verdict, "max_after_warmup": rss_max,
                   "after_load": rows[-1]["hub_rss_mb"]},
        "fds": {"baseline": fd_baseline, "peak": fd_peak, "back_after_s": None if fd_back_s is None else round(fd_back_s, 1),
                "end": fd_end},
        "cpu_pct": {"hub_mean": round(statistics.mean(hub_cpu), 1) if hub_cpu else 0, "hub_max": max(hub_cpu, default=0),
                    "load_mean": round(statistics.mean(load_cpu), 1) if load_cpu else 0,
                    "load_max": max(load_cpu, default=0)},
        "clients_open_peak": peak_open, "connections_opened": conns,
        "resumable": {k: c[k] for k in ("delivered", "lost", "duplicated", "seq gaps", "seq redelivered", "tail checks",
                                        "lost at the end of a session", "recovered from history")},
        "plain": {k: c[k] for k in ("plain delivered", "plain lost in session", "plain duplicated in session",
                                    "plain missed across reconnects")},
        "totals": dict(c), "loadgen_errors": res.get("errors", {}), "loadgen_lag": res.get("lag", {}),
        "webhooks": dict(hooks.counts), "hub_log_levels": dict(levels), "hub_log_distinct": dict(distinct.most_common(30)),
        "hub_exit": rc if hub_died is None else f"died: {hub_died}",
        "hub_metrics": {k: v for k, v in final_metrics.items() if "{" not in k},
        "failures": failures,
    }
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1, sort_keys=True)

    try:
        import chart
        dsum = (f"resumable: {c['delivered']:,} delivered, {lost} lost, {dup} duplicated; "
                f"{c['resumes']:,} resumes, {c['transport switches']:,} switches; {c['publishes']:,} publishes")
        meta = {"title": f"Halley soak: {args.minutes:g} min, {args.connections:,} clients, {args.rate:g} publishes/s "
                         f"({os.path.basename(args.bin)}, hub on core {args.hub_cpu}, load on core {args.load_cpu})",
                "warmup_s": warmup, "load_s": duration, "rss_first_window": (warmup, warmup + window),
                "rss_last_window": (duration - window, duration), "rss_first": rss_first, "rss_last": rss_last,
                "rss_growth_pct": growth, "rss_verdict": rss_verdict, "fd_baseline": fd_baseline,
                "fd_peak": fd_peak, "fd_verdict": "pass" if fd_ok else "FAIL",
                "fd_summary": (f"back {fd_back_s:.0f} s after the load" if fd_back_s is not None else f"{fd_end} at the end"),
                "delivery_summary": dsum}
        chart_rows = [dict(r) for r in rows if r["phase"] != "baseline"]
        chart.render(chart_rows, meta, os.path.join(args.out, "soak.png"))
    except Exception as e:  # noqa: BLE001 - the verdict stands without the picture
        failures.append(f"the chart failed: {type(e).__name__}: {e}")

    # -- report
    log("")
    log(f"soak: {args.minutes:g} minutes, {args.bin}")
    log(f"  clients: target {args.connections:,}, peak open {peak_open:,}; hub descriptors peak {fd_peak:,}; "
        f"connections opened {conns:,}")
    log(f"  published {c['publishes']:,} ({c['published messages']:,} channel messages); delivered: resumable "
        f"{c['delivered']:,}, plain {c['plain delivered']:,}; resumes {c['resumes']:,} planned + "
        f"{c['resumes after the transport ended']:,} after the transport ended; transport switches "
        f"{c['transport switches']:,}")
    log(f"  presence joins {c['presence joins']:,}, leaves {c['presence leaves']:,}, member events "
        f"{c['presence member_added'] + c['presence member_removed']:,}; client events sent {c['client events sent']:,}, "
        f"received {c['client events received']:,}; webhooks {sum(hooks.counts.values()):,}")
    log("  slow consumers: " + ", ".join(f"{k} {v}" for k, v in sorted(c.items()) if k.startswith("slow-")))
    log(f"  plain sessions: {c['plain lost in session']} lost within a connection, "
        f"{c['plain missed across reconnects']:,} missed across reconnects (expected, not a failure)")
    log(f"  CPU (% of a core, mean / max): hub {summary['cpu_pct']['hub_mean']} / {summary['cpu_pct']['hub_max']}, "
        f"load generator {summary['cpu_pct']['load_mean']} / {summary['cpu_pct']['load_max']}; "
        f"load generator loop lag max {res.get('lag', {}).get('max', 0):.2f} s")
    log("  hub log: " + ", ".join(f"{k} {v}" for k, v in sorted(levels.items())))
    for line, n in distinct.most_common(15):
        log(f"    {n:6d} x {line}")
    if errs:
        log(f"  load generator saw {sum(errs.values())} unexpected events:")
        for k, n in sorted(errs.items(), key=lambda kv: -kv[1])[:20]:
            log(f"    {n:6d} x {k}: {(res.get('error_samples', {}).get(k) or [''])[0]}")
    for s in res.get("loss_samples", [])[:10]:
        log(f"    loss: {s}")
    log("")
    log(f"  (a) RSS after warm-up ({warmup:.0f} s): first {window:.0f} s mean {rss_first:.1f} MB, last {window:.0f} s "
        f"mean {rss_last:.1f} MB: {growth:+.2f} % (limit +{RSS_LIMIT_PCT:g} %; max {rss_max:.1f} MB): "
        + rss_verdict)
    log(f"  (b) descriptors: baseline {fd_baseline}, peak {fd_peak:,}, "
        + (f"back at the baseline {fd_back_s:.1f} s after the load" if fd_back_s is not None else "never back")
        + f", {fd_end} after {AFTER_S} s: " + ("pass" if fd_ok else "FAIL"))
    log(f"  (c) resumable sessions: {c['delivered']:,} delivered, {lost} lost, {dup} duplicated, {gaps} seq gaps "
        f"({c['seq redelivered']} resent messages dropped by seq, {c['tail checks']:,} end checks): "
        + ("pass" if not (lost or dup or gaps) else "FAIL"))
    log(f"  (d) hub exit {summary['hub_exit']}, load generator exit {load_rc}")
    log(f"  output: {csv_path}, {os.path.join(args.out, 'soak.png')}, {os.path.join(args.out, 'summary.json')}, "
        f"{hub_log_path}")
    if failures:
        log("\nSOAK FAILED:\n  " + "\n  ".join(failures))
        return 1
    log("\nsoak: passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
