"""cvnotify benchmarks (run through scripts/bench, which builds and installs
what this needs). Everything runs on loopback: Azurite from npm, the
in-memory benchmark fixture (examples/fast_queue.rs), cvnotify, the raw
ceiling (examples/raw_ceiling.rs) and the Python consumers
(scripts/bench_consumer.py). Writes BENCHMARKS.md; a scenario run alone
(`scripts/bench notice`, `queues`, `download`) rewrites only its own
section of it.

Each figure is min / median / max over RUNS runs made in this one run of the
script, so peers are compared under the same conditions."""

import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from urllib.request import Request, urlopen

from azure.storage.blob import BlobServiceClient, ResourceTypes, AccountSasPermissions, generate_account_sas
from azure.storage.queue import QueueClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target/release/cvnotify")
RAW = os.path.join(ROOT, "target/release/examples/raw_ceiling")
FAST = os.path.join(ROOT, "target/release/examples/fast_queue")
PY = sys.executable
CONSUMER = os.path.join(ROOT, "scripts/bench_consumer.py")
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
WORK = tempfile.mkdtemp(prefix="cvnotify-bench-")
CLK = os.sysconf("SC_CLK_TCK")
BODY = json.dumps({"version": "1.0", "type": "Training", "Content": {
    "projectId": "8a1c2c4e-5b57-4a8e-9f3c-1d2e3f4a5b6c",
    "iterationId": "0f9e8d7c-6b5a-4c3d-8e1f-2a3b4c5d6e7f",
    "trainingStatus": "TrainingCompleted"}})


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def stats(values):
    v = sorted(values)
    return v[0], statistics.median(v), v[-1]


def fmt(values, digits=0, scale=1.0):
    lo, med, hi = stats(values)
    f = f"{{:,.{digits}f}}"
    return f"{f.format(lo * scale)} / {f.format(med * scale)} / {f.format(hi * scale)}"


class Azurite:
    def __init__(self):
        self.dir = tempfile.mkdtemp(dir=WORK)
        self.proc = subprocess.Popen(
            [os.path.join(ROOT, "node_modules/.bin/azurite-queue"), "--queueHost", "127.0.0.1",
             "--queuePort", "0", "--inMemoryPersistence", "--skipApiVersionCheck", "--silent", "--loose"],
            cwd=self.dir, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for line in self.proc.stdout:
            m = re.search(r"listens on http://127.0.0.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                break
        self.endpoint = f"http://127.0.0.1:{self.port}/devstoreaccount1"
        self.conn = (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={KEY};"
                     f"QueueEndpoint={self.endpoint};")

    def queue(self, name):
        q = QueueClient.from_connection_string(self.conn, name)
        try:
            q.create_queue()
        except Exception:
            pass
        return q

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Fast:
    """The in-memory benchmark fixture."""

    def __init__(self):
        self.proc = subprocess.Popen([FAST], stdout=subprocess.PIPE, text=True)
        self.port = int(self.proc.stdout.readline().split()[1])
        self.endpoint = f"http://127.0.0.1:{self.port}/devstoreaccount1"

    def fill(self, queue, n, body=BODY):
        urlopen(Request(f"http://127.0.0.1:{self.port}/_bench/fill?queue={queue}&n={n}",
                        data=body.encode(), method="POST")).read()

    def stats(self, queue):
        return json.loads(urlopen(f"http://127.0.0.1:{self.port}/_bench/stats?queue={queue}").read())

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def send_many(q, n, threads=16, body=BODY):
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda _: q.send_message(body), range(n)))


def config(endpoint, queue, extra=""):
    path = os.path.join(WORK, f"{queue}.toml")
    with open(path, "w") as f:
        f.write(f"""[queue]
name = "{queue}"
endpoint = "{endpoint}"
{extra}
[auth]
mode = "connection_string"
connection_string = "UseDevelopmentStorage=true"
[log]
format = "json"
[[handlers]]
type = "log"
""")
    return path


def ts_ns(record):
    """RFC 3339 timestamp of a JSON log record, as Unix ns."""
    t = record["timestamp"]
    base, frac = t[:19], t[20:-1] if "." in t else "0"
    secs = datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=__import__("datetime").timezone.utc).timestamp()
    return int(secs) * 10**9 + int((frac + "000000000")[:9])


def run_peer(kind, endpoint, conn, queue, count):
    """Runs one consumer until `count` messages are handled; returns
    (seconds from its first receive to its last delete, CPU seconds)."""
    out_path = os.path.join(WORK, f"{queue}-{kind}-{uuid.uuid4().hex[:6]}.out")
    with open(out_path, "w") as out:
        if kind == "cvnotify":
            cmd = [BIN, "--config", config(endpoint, queue, os.environ.get("BENCH_CVNOTIFY_EXTRA", "")), "run", "--once"]
        elif kind == "raw":
            cmd = [RAW, endpoint, queue, str(count)]
        else:
            cmd = [PY, CONSUMER, conn, queue, str(count), "seq" if kind == "python" else "pool"]
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
    cpu = usage.ru_utime + usage.ru_stime
    with open(out_path) as f:
        text = f.read()
    if kind == "cvnotify":
        records = [json.loads(l) for l in text.splitlines() if l.startswith("{")]
        start = next(ts_ns(r) for r in records if r.get("message") == "Listening for Custom Vision notifications")
        handled = [ts_ns(r) for r in records if r.get("message") == "Message handled"]
        assert len(handled) == count, f"cvnotify handled {len(handled)} of {count}"
        end = max(handled) if handled else start
    else:
        start = int(re.search(r"START (\d+)", text).group(1))
        m = re.search(r"END (\d+) (\d+)", text)
        assert int(m.group(2)) == count, f"{kind} handled {m.group(2)} of {count}"
        end = int(m.group(1))
    os.remove(out_path)
    return (end - start) / 1e9, cpu


PEERS = [("cvnotify", "cvnotify (log handler to a file)"),
         ("python", "Python SDK consumer, sequential deletes"),
         ("python-pool", "Python SDK consumer, 16-thread deletes"),
         ("raw", "raw ceiling (Rust, same SDK, no bookkeeping)")]


def drain_azurite(kind, prefix, body=BODY):
    """Section 1's drain: 2,000 messages sent in 4 batches of 500, each
    batch drained by a fresh `kind` consumer, in a fresh Azurite (it slows
    down, and once stopped answering, as its in-memory history grows).
    Returns (seconds, CPU seconds), summed over the batches."""
    az = Azurite()
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    q = az.queue(name)
    secs = cpu = 0.0
    for _ in range(4):
        send_many(q, 500, body=body)
        s, c = run_peer(kind, az.endpoint, az.conn, name, 500)
        secs += s
        cpu += c
    az.stop()
    return secs, cpu


def scenario_drain_azurite(results):
    log("== 1. drain, Azurite: 2,000 messages in batches of 500")
    az = Azurite()
    baseline = {}
    for kind, _ in PEERS:
        q = f"empty-{kind}-{uuid.uuid4().hex[:6]}"
        az.queue(q)
        baseline[kind] = statistics.median(run_peer(kind, az.endpoint, az.conn, q, 0)[1] for _ in range(3))
    az.stop()
    rows = {k: {"rate": [], "cpu_us": []} for k, _ in PEERS}
    for run in range(RUNS):
        for kind, _ in PEERS:
            secs, cpu = drain_azurite(kind, f"drain-{kind}-{run}")
            cpu -= 4 * baseline[kind]
            rows[kind]["rate"].append(2000 / secs)
            rows[kind]["cpu_us"].append(cpu / 2000 * 1e6)
            log(f"  run {run + 1} {kind}: {2000 / secs:,.0f} msg/s, {cpu / 2000 * 1e6:,.0f} µs CPU/msg")
    results["drain_azurite"] = rows
    results["baseline_cpu"] = baseline


def scenario_drain_fast(results):
    n = int(os.environ.get("BENCH_FAST_N", "50000"))
    log(f"== 2. drain, in-memory fixture: {n:,} messages")
    fast = Fast()
    rows = {k: {"rate": [], "cpu_us": []} for k in ("cvnotify", "raw")}
    for run in range(RUNS):
        for kind in ("cvnotify", "raw"):
            q = f"fast-{kind}-{run}"
            fast.fill(q, n)
            secs, cpu = run_peer(kind, fast.endpoint, "", q, n)
            assert fast.stats(q)["remaining"] == 0
            rows[kind]["rate"].append(n / secs)
            rows[kind]["cpu_us"].append(cpu / n * 1e6)
            log(f"  run {run + 1} {kind}: {n / secs:,.0f} msg/s, {cpu / n * 1e6:,.1f} µs CPU/msg")
    fast.stop()
    results["drain_fast"] = rows
    results["fast_n"] = n


def start_daemon(endpoint, queue, extra="", tag=""):
    out = open(os.path.join(WORK, f"{queue}{tag}.log"), "w")
    proc = subprocess.Popen([BIN, "--config", config(endpoint, queue, extra), "run"], stdout=out,
                            stderr=subprocess.DEVNULL)
    return proc, out.name


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    _, _, usage = os.wait4(proc.pid, 0)
    return usage.ru_utime + usage.ru_stime


def latencies(log_path, sent):
    with open(log_path) as f:
        records = [json.loads(l) for l in f if l.startswith("{")]
    seen = {}
    for r in records:
        if r.get("message") == "Custom Vision event" and r["message_id"] in sent:
            seen.setdefault(r["message_id"], ts_ns(r))
    return [(seen[i] - sent[i]) / 1e6 for i in sent if i in seen], len(sent) - len(seen)


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def scenario_latency_and_idle(results):
    count = int(os.environ.get("BENCH_LATENCY_N", "200"))
    log(f"== 3. latency: {count} messages at 5 msg/s; 4. idle cost over 120 s (in parallel)")
    fast = Fast()
    # 4. Idle: RUNS daemons with default settings on empty fixture queues.
    idle = []
    for i in range(RUNS):
        q = f"idle-{i}"
        proc, _ = start_daemon(fast.endpoint, q)
        idle.append((q, proc, time.time()))
    # Steady state starts once the back-off reached its cap (~13 s).
    warm = {}

    def snapshot():
        time.sleep(IDLE_WARMUP)
        for q, _, _ in idle:
            warm[q] = (time.time(), fast.stats(q)["requests"].get("receive", 0))
    threading.Thread(target=snapshot, daemon=True).start()
    rows = {"1s": [], "default": [], "load": []}
    lost = 0
    idle_rows = None
    for run in range(RUNS):
        az = Azurite()
        for phase in ("quiet", "load"):
            variants = [("1s", 'max_poll_interval = "1s"'), ("default", "")] if phase == "quiet" else [("load", 'max_poll_interval = "1s"')]
            daemons = []
            for name, extra in variants:
                qn = f"lat-{name}-{run}"
                q = az.queue(qn)
                proc, path = start_daemon(az.endpoint, qn, extra)
                daemons.append((name, q, proc, path, {}))
            stop_load = threading.Event()
            load_threads = []
            if phase == "load":
                # Scenario 1 running beside: a queue kept at up to 500
                # messages, drained by another cvnotify.
                lq_name = f"load-{run}"
                lq = az.queue(lq_name)
                load_proc, _ = start_daemon(az.endpoint, lq_name, "", tag="-load")

                def feed():
                    # Scenario 1's load: 2,000 messages, depth at most 500.
                    # Bounded: unbounded feeding made Azurite stop answering.
                    sent = 0
                    while not stop_load.is_set() and sent < 2000:
                        if lq.get_queue_properties().approximate_message_count < 250:
                            send_many(lq, 250, threads=8)
                            sent += 250
                        else:
                            time.sleep(0.05)
                t = threading.Thread(target=feed)
                t.start()
                load_threads.append(t)
            time.sleep(1)
            for i in range(count):
                t0 = time.time()
                for name, q, proc, path, sent in daemons:
                    before = time.time_ns()
                    sent[q.send_message(BODY).id] = before
                time.sleep(max(0, 0.2 - (time.time() - t0)))
            time.sleep(12)
            for name, q, proc, path, sent in daemons:
                stop(proc)
                lat, missing = latencies(path, sent)
                lost += missing
                rows[name].append((pct(lat, 50), pct(lat, 95), pct(lat, 99)))
                log(f"  run {run + 1} {name}: p50 {pct(lat, 50):,.0f} ms, p95 {pct(lat, 95):,.0f} ms, p99 {pct(lat, 99):,.0f} ms")
            if phase == "load":
                stop_load.set()
                for t in load_threads:
                    t.join(timeout=60)
                stop(load_proc)
            if idle_rows is None and all(time.time() - t0 >= 120 + IDLE_WARMUP for _, _, t0 in idle):
                idle_rows = measure_idle(fast, idle, warm)
        az.stop()
    if idle_rows is None:
        time.sleep(max(0, 120 + IDLE_WARMUP - min(time.time() - t0 for _, _, t0 in idle)))
        idle_rows = measure_idle(fast, idle, warm)
    fast.stop()
    results["latency"] = rows
    results["latency_lost"] = lost
    results["idle"] = idle_rows


IDLE_WARMUP = 30


def measure_idle(fast, idle, warm):
    rows = {"rss_mib": [], "cpu_pct": [], "req_per_min": [], "steady_req_per_min": []}
    for q, proc, t0 in idle:
        with open(f"/proc/{proc.pid}/status") as f:
            rss_kb = int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))
        now = time.time()
        elapsed = now - t0
        receives = fast.stats(q)["requests"].get("receive", 0)
        cpu = stop(proc)
        t_warm, r_warm = warm[q]
        steady = (receives - r_warm) / (now - t_warm) * 60
        rows["rss_mib"].append(rss_kb / 1024)
        rows["cpu_pct"].append(cpu / elapsed * 100)
        rows["req_per_min"].append(receives / elapsed * 60)
        rows["steady_req_per_min"].append(steady)
        log(f"  idle {q}: RSS {rss_kb / 1024:.1f} MiB, CPU {cpu / elapsed * 100:.3f} %, {receives / elapsed * 60:.1f} requests/min over {elapsed:.0f} s, {steady:.1f}/min after {IDLE_WARMUP} s")
    return rows


def scenario_startup(results):
    log("== 5. start-up: exec to the first receive request (Shared Key)")
    fast = Fast()
    values = []
    for i in range(max(RUNS, 10)):
        q = f"start-{i}"
        path = config(fast.endpoint, q)
        t0 = time.time_ns()
        proc = subprocess.Popen([BIN, "--config", path, "run"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        first = None
        for _ in range(200):
            first = fast.stats(q)["first_receive_ns"]
            if first:
                break
            time.sleep(0.01)
        stop(proc)
        values.append((int(first) - t0) / 1e6)
    fast.stop()
    results["startup_ms"] = values
    log(f"  start-up ms: {fmt(values, 1)}")


class CvStandIn:
    """BENCHMARK FIXTURE, NOT THE SERVICE: answers the three Training API
    calls the customvision handler makes for an export (GetIteration,
    GetExports, ExportIteration) for any ids, in memory, and records when
    each export was requested. Tests use tests/common/customvision.rs."""

    def __init__(self):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        stand_in = self
        self.exports = {}
        self.requested = {}

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def answer(self, body):
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                parts = self.path.split("?")[0].strip("/").split("/")
                it = parts[6] if len(parts) > 6 else ""
                if parts[-1] == "export":
                    self.answer(stand_in.exports.get(it, []))
                else:
                    self.answer({"id": it, "name": "i", "status": "Completed", "exportable": True,
                                 "exportableTo": ["ONNX"]})

            def do_POST(self):
                parts = self.path.split("?")[0].strip("/").split("/")
                it = parts[6]
                export = {"platform": "ONNX", "flavor": None, "status": "Exporting", "downloadUri": ""}
                stand_in.exports.setdefault(it, []).append(export)
                stand_in.requested[it] = time.time_ns()
                self.answer(export)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()


def notice_config(endpoint, queue, cv_port=None):
    """max_poll_interval = 30s; with cv_port, a customvision handler that
    exports ONNX; always a log handler for exports (its record times the
    handling)."""
    path = os.path.join(WORK, f"{queue}.toml")
    cv = ""
    if cv_port:
        cv = f"""[customvision]
endpoint = "http://127.0.0.1:{cv_port}"
training_key = "bench"
[[handlers]]
type = "customvision"
export = [{{ platform = "ONNX" }}]
"""
    with open(path, "w") as f:
        f.write(f"""[queue]
name = "{queue}"
endpoint = "{endpoint}"
min_poll_interval = "100ms"
max_poll_interval = "30s"
[auth]
mode = "connection_string"
connection_string = "UseDevelopmentStorage=true"
[log]
format = "json"
{cv}
[[handlers]]
type = "log"
events = ["export.*"]
""")
    return path


NOTICE_WAIT = 20


def scenario_notice(results):
    log(f"== 6. export notice: an Export message {NOTICE_WAIT} s after the Training message, max_poll_interval = 30s;"
        " idle requests with and without the customvision handler")
    fast = Fast()
    cv = CvStandIn()
    rows = {"pending_ms": [], "none_ms": [], "pending_req_per_min": []}
    for run in range(RUNS):
        procs = {}
        for kind in ("pending", "none"):
            q = f"notice-{kind}-{run}"
            path = notice_config(fast.endpoint, q, cv.port if kind == "pending" else None)
            out = open(os.path.join(WORK, f"{q}.log"), "w")
            procs[kind] = (q, subprocess.Popen([BIN, "--config", path, "run"], stdout=out,
                                               stderr=subprocess.DEVNULL), out.name)
        project, iteration = str(uuid.uuid4()), {k: str(uuid.uuid4()) for k in procs}
        time.sleep(1)
        for kind, (q, _, _) in procs.items():
            body = json.dumps({"version": "1.0", "type": "Training", "Content": {
                "projectId": project, "iterationId": iteration[kind], "trainingStatus": "TrainingCompleted"}})
            fast.fill(q, 1, body)
        for _ in range(100):
            if iteration["pending"] in cv.requested:
                break
            time.sleep(0.05)
        t_req = time.time()
        r_req = fast.stats(procs["pending"][0])["requests"].get("receive", 0)
        time.sleep(NOTICE_WAIT)
        r_wait = fast.stats(procs["pending"][0])["requests"].get("receive", 0)
        rows["pending_req_per_min"].append((r_wait - r_req) / (time.time() - t_req) * 60)
        sent = {}
        for kind, (q, _, _) in procs.items():
            body = json.dumps({"version": "1.0", "type": "Export", "Content": {
                "projectId": project, "iterationId": iteration[kind], "exportStatus": "ExportCompleted",
                "modelUri": f"https://acct.blob.core.windows.net/models/{project}%20-%20{iteration[kind]}.ONNX"}})
            sent[kind] = time.time_ns()
            fast.fill(q, 1, body)
        deadline = time.time() + 40
        seen = {}
        while time.time() < deadline and len(seen) < 2:
            for kind, (q, _, path) in procs.items():
                if kind in seen:
                    continue
                with open(path) as f:
                    for line in f:
                        if line.startswith("{"):
                            rec = json.loads(line)
                            if rec.get("message") == "Custom Vision event" and rec.get("event_type") == "Export":
                                seen[kind] = ts_ns(rec)
                                break
            time.sleep(0.1)
        for kind, (_, proc, _) in procs.items():
            stop(proc)
            if kind in seen:
                rows[f"{kind}_ms"].append((seen[kind] - sent[kind]) / 1e6)
        log(f"  run {run + 1}: with a pending export {rows['pending_ms'][-1]:,.0f} ms, without {rows['none_ms'][-1]:,.0f} ms; "
            f"{rows['pending_req_per_min'][-1]:.0f} receives/min while waiting")
    # Idle: a daemon with the customvision handler but no pending export,
    # beside one without the handler, on empty queues.
    idle = []
    for kind in ("customvision", "baseline"):
        q = f"notice-idle-{kind}"
        path = notice_config(fast.endpoint, q, cv.port if kind == "customvision" else None)
        with open(path) as f:
            text = f.read().replace('max_poll_interval = "30s"', 'max_poll_interval = "10s"')
        with open(path, "w") as f:
            f.write(text)
        idle.append((kind, q, subprocess.Popen([BIN, "--config", path, "run"], stdout=subprocess.DEVNULL,
                                               stderr=subprocess.DEVNULL)))
    time.sleep(IDLE_WARMUP)
    warm = {q: fast.stats(q)["requests"].get("receive", 0) for _, q, _ in idle}
    t0 = time.time()
    time.sleep(120)
    for kind, q, proc in idle:
        rows[f"idle_{kind}_req_per_min"] = (fast.stats(q)["requests"].get("receive", 0) - warm[q]) / (time.time() - t0) * 60
        stop(proc)
        log(f"  idle {kind}: {rows[f'idle_{kind}_req_per_min']:.1f} receives/min (max_poll_interval = 10s)")
    cv.stop()
    fast.stop()
    results["notice"] = rows


def notice_section(r):
    n = r["notice"]
    return [
        "## 6. Notice of a requested export",
        "",
        f"A daemon with `max_poll_interval = 30s` gets a `Training` message; {NOTICE_WAIT} s later (after its back-off would "
        "have grown past 10 s) the `Export` message arrives in the in-memory fixture. With the `customvision` handler, which "
        "requested the export from a loopback stand-in of the Training API (`CvStandIn` in scripts/bench.py), the loop polls at "
        "`min_poll_interval` (100 ms) until that message came; without it, it backs off as usual. Latency is from just before "
        "the `Export` message is put to the log handler's record of it.",
        "",
        "| | ms from arrival to handling |",
        "|---|---|",
        f"| export pending (customvision handler) | {fmt(n['pending_ms'])} |",
        f"| no export pending | {fmt(n['none_ms'])} |",
        "",
        f"Receive requests per minute while the export is pending: {fmt(n['pending_req_per_min'])} (the price of the fast "
        "notice, for at most `export_wait`). Idle, steady state after "
        f"{IDLE_WARMUP} s, `max_poll_interval = 10s`, one run: with the customvision handler configured and nothing pending "
        f"{n['idle_customvision_req_per_min']:.1f} requests/min, without it {n['idle_baseline_req_per_min']:.1f} "
        "(target: unchanged).",
        "",
    ]


def update_notice_section(r):
    """Writes section 6 into BENCHMARKS.md in place (`scripts/bench notice`)."""
    path = os.path.join(ROOT, "BENCHMARKS.md")
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    head = text.split("## 6. Notice of a requested export")[0].rstrip("\n")
    # Section 7 (`scripts/bench queues`) comes after and is kept.
    tail = QUEUES_TITLE + text.split(QUEUES_TITLE, 1)[1] if QUEUES_TITLE in text else ""
    with open(path, "w") as fh:
        fh.write(head + "\n\n" + "\n".join(notice_section(r)) + "\n" +
                 f"\n(Section 6 measured {datetime.utcnow().strftime('%Y-%m-%d %H:%M')} UTC by `scripts/bench notice`, "
                 f"{RUNS} runs.)\n" + ("\n" + tail if tail else ""))


QUEUES_TITLE = "## 7. Two queues at once"


def queues_section(r):
    q = r["queues"]
    return [
        QUEUES_TITLE,
        "",
        "One `run --once` daemon drains one queue, then another drains two queues at once (`[[queues]]`, each queue in "
        "its own Azurite, `max_concurrency = 32` shared); per-queue rate = messages / time from the first receive to "
        f"that queue's last handled message, {r['queues_n']} messages per queue.",
        "",
        "| one queue, msg/s | two queues, msg/s per queue | per-queue ratio |",
        "|---|---|---|",
        f"| {fmt(q['one'])} | {fmt(q['two'])} | {fmt(q['ratio'], 2)} |",
        "",
        f"Both queues together: {2 * statistics.median(q['ratio']):.2f} × one queue alone (median). A ratio of 1.0 would "
        f"mean no interference; on this {os.cpu_count()}-core machine the two Azurite processes (Node.js) and the daemon "
        "share the CPU, so the ratio measures that contention as much as the daemon's shared concurrency limit.",
        "",
    ]


def update_queues_section(r):
    """Writes section 7 into BENCHMARKS.md in place (`scripts/bench queues`)."""
    path = os.path.join(ROOT, "BENCHMARKS.md")
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    head = text.split(QUEUES_TITLE)[0].rstrip("\n")
    # Section 8 (`scripts/bench download`) comes after and is kept.
    tail = DOWNLOAD_TITLE + text.split(DOWNLOAD_TITLE, 1)[1] if DOWNLOAD_TITLE in text else ""
    with open(path, "w") as fh:
        fh.write(head + "\n\n" + "\n".join(queues_section(r)) + "\n" +
                 f"\n(Section 7 measured {datetime.utcnow().strftime('%Y-%m-%d %H:%M')} UTC by `scripts/bench queues`, "
                 f"{RUNS} runs.)\n" + ("\n" + tail if tail else ""))


class AzuriteBlob:
    """Azurite's blob service, in memory."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(dir=WORK)
        self.proc = subprocess.Popen(
            [os.path.join(ROOT, "node_modules/.bin/azurite-blob"), "--blobHost", "127.0.0.1",
             "--blobPort", "0", "--inMemoryPersistence", "--skipApiVersionCheck", "--silent", "--loose"],
            cwd=self.dir, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for line in self.proc.stdout:
            m = re.search(r"listens on http://127.0.0.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                break
        self.endpoint = f"http://127.0.0.1:{self.port}/devstoreaccount1"
        self.conn = (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={KEY};"
                     f"BlobEndpoint={self.endpoint};")

    def stop(self):
        Azurite.stop(self)


DOWNLOAD_MIB = int(os.environ.get("BENCH_DOWNLOAD_MIB", "256"))
PY_DOWNLOAD = """
import sys, time
from azure.storage.blob import BlobClient
url, out = sys.argv[1], sys.argv[2]
client = BlobClient.from_blob_url(url)
with open(out, "wb") as f:
    t0 = time.perf_counter()
    client.download_blob().readinto(f)
    print(time.perf_counter() - t0)
"""


def vm_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(field + r":\s+(\d+)", f.read()).group(1))


def scenario_download(results):
    size = DOWNLOAD_MIB * 1024 * 1024
    log(f"== 8. model download: {DOWNLOAD_MIB} MiB from Azurite's blob service, by curl, the Python SDK and cvnotify")
    blob_az = AzuriteBlob()
    queue_az = Azurite()
    service = BlobServiceClient.from_connection_string(blob_az.conn)
    container = service.create_container("models")
    project, iteration = str(uuid.uuid4()), str(uuid.uuid4())
    name = f"{project} - {iteration}.ONNX"
    data = os.urandom(size)
    container.upload_blob(name, data, overwrite=True, max_concurrency=4)
    del data
    sas = generate_account_sas("devstoreaccount1", KEY, ResourceTypes(object=True), AccountSasPermissions(read=True),
                               expiry=datetime.utcnow().replace(year=datetime.utcnow().year + 1))
    blob_url = f"{blob_az.endpoint}/models/{name.replace(' ', '%20')}"
    sas_url = f"{blob_url}?{sas}"
    out_dir = tempfile.mkdtemp(dir=WORK)
    rows = {k: {"mib_s": [], "peak_rss_mib": [], "rss_over_idle_mib": []} for k in ("curl", "python", "cvnotify")}

    def run(cmd):
        """Runs `cmd`: (seconds, stdout, peak RSS MiB). The peak is the
        process's own VmHWM, polled: ru_maxrss would count the pages this
        (large) script had when it forked."""
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        peak = [0]

        def watch():
            while True:
                try:
                    with open(f"/proc/{proc.pid}/status") as f:
                        m = re.search(r"VmHWM:\s+(\d+)", f.read())
                except OSError:
                    return
                if not m:
                    return
                peak[0] = max(peak[0], int(m.group(1)))
                time.sleep(0.005)
        watcher = threading.Thread(target=watch)
        watcher.start()
        stdout = proc.stdout.read()
        _, status, _ = os.wait4(proc.pid, 0)
        secs = time.perf_counter() - t0
        watcher.join()
        assert status == 0, f"{cmd[0]} failed"
        return secs, stdout, peak[0] / 1024

    # cvnotify: one daemon for all runs, its queue on the queue Azurite.
    qname = f"dl-{uuid.uuid4().hex[:8]}"
    q = queue_az.queue(qname)
    models = os.path.join(out_dir, "models")
    cfg = os.path.join(WORK, f"{qname}.toml")
    with open(cfg, "w") as f:
        f.write(f"""[queue]
name = "{qname}"
endpoint = "{queue_az.endpoint}"
min_poll_interval = "50ms"
max_poll_interval = "200ms"
[auth]
mode = "connection_string"
connection_string = "UseDevelopmentStorage=true"
[log]
format = "json"
[[handlers]]
type = "download"
dir = "{models}"
container = "{blob_az.endpoint}/models"
max_size = "1GiB"
""")
    log_path = os.path.join(WORK, f"{qname}.log")
    out = open(log_path, "w")
    daemon = subprocess.Popen([BIN, "--config", cfg, "run"], stdout=out, stderr=subprocess.DEVNULL)
    time.sleep(3)
    idle = vm_kib(daemon.pid, "VmRSS") / 1024
    body = json.dumps({"version": "1.0", "type": "Export", "Content": {
        "projectId": project, "iterationId": iteration, "exportStatus": "ExportCompleted", "modelUri": blob_url}})

    def cvnotify_run():
        for f in os.listdir(models) if os.path.isdir(models) else []:
            os.remove(os.path.join(models, f))
        seen = 0
        with open(log_path) as f:
            seen = sum(1 for l in f if '"Model downloaded"' in l)
        q.send_message(body)
        deadline = time.time() + 300
        while time.time() < deadline:
            with open(log_path) as f:
                records = [json.loads(l) for l in f if l.startswith("{")]
            done = [r for r in records if r.get("message") == "Model downloaded"]
            if len(done) > seen:
                start = [r for r in records if r.get("message") == "Downloading the model"][-1]
                return (ts_ns(done[-1]) - ts_ns(start)) / 1e9
            time.sleep(0.05)
        raise RuntimeError("cvnotify did not download the model")

    for run_no in range(RUNS):
        secs, _, rss = run(["curl", "-sS", "-o", os.path.join(out_dir, "curl.bin"), sas_url])
        assert os.path.getsize(os.path.join(out_dir, "curl.bin")) == size
        os.remove(os.path.join(out_dir, "curl.bin"))
        rows["curl"]["mib_s"].append(DOWNLOAD_MIB / secs)
        rows["curl"]["peak_rss_mib"].append(rss)
        log(f"  run {run_no + 1} curl: {DOWNLOAD_MIB / secs:,.0f} MiB/s, peak RSS {rss:.1f} MiB")

        _, stdout, rss = run([PY, "-c", PY_DOWNLOAD, sas_url, os.path.join(out_dir, "py.bin")])
        secs = float(stdout.strip().splitlines()[-1])
        assert os.path.getsize(os.path.join(out_dir, "py.bin")) == size
        os.remove(os.path.join(out_dir, "py.bin"))
        rows["python"]["mib_s"].append(DOWNLOAD_MIB / secs)
        rows["python"]["peak_rss_mib"].append(rss)
        log(f"  run {run_no + 1} python: {DOWNLOAD_MIB / secs:,.0f} MiB/s, peak RSS {rss:.1f} MiB")

        secs = cvnotify_run()
        peak = vm_kib(daemon.pid, "VmHWM") / 1024
        assert os.path.getsize(os.path.join(models, name)) == size
        rows["cvnotify"]["mib_s"].append(DOWNLOAD_MIB / secs)
        rows["cvnotify"]["peak_rss_mib"].append(peak)
        rows["cvnotify"]["rss_over_idle_mib"].append(peak - idle)
        log(f"  run {run_no + 1} cvnotify: {DOWNLOAD_MIB / secs:,.0f} MiB/s, peak RSS {peak:.1f} MiB (idle {idle:.1f} MiB)")
    stop(daemon)
    out.close()
    queue_az.stop()
    blob_az.stop()
    results["download"] = rows
    results["download_idle_rss_mib"] = idle
    results["download_mib"] = DOWNLOAD_MIB


def download_section(r):
    d = r["download"]
    med = lambda v: statistics.median(v)
    return [
        DOWNLOAD_TITLE,
        "",
        f"A {r['download_mib']} MiB model fetched from Azurite's blob service (in memory, loopback) into a file on the same disk: "
        "by `curl -o` with a SAS URL (the ceiling), by the Python Storage SDK's `download_blob().readinto()` with the same URL "
        "(timed around that call), and by cvnotify's `download` handler with the account key from its backup `container` "
        "(timed from its `Downloading the model` to its `Model downloaded` log record: one GET, SHA-256 and the "
        "blob's Content-MD5 checked, fsync, rename). Peak RSS is the process's high-water mark; for cvnotify, a daemon "
        "that kept running over the runs, with its idle RSS before the first download.",
        "",
        "| downloader | MiB/s | peak RSS MiB |",
        "|---|---|---|",
        f"| curl -o (ceiling) | {fmt(d['curl']['mib_s'])} | {fmt(d['curl']['peak_rss_mib'], 1)} |",
        f"| Python SDK, download_blob().readinto() | {fmt(d['python']['mib_s'])} | {fmt(d['python']['peak_rss_mib'], 1)} |",
        f"| cvnotify download handler | {fmt(d['cvnotify']['mib_s'])} | {fmt(d['cvnotify']['peak_rss_mib'], 1)} |",
        "",
        f"cvnotify's idle RSS {r['download_idle_rss_mib']:.1f} MiB; peak over idle {fmt(d['cvnotify']['rss_over_idle_mib'], 1)} MiB. "
        f"Median cvnotify / curl = **{med(d['cvnotify']['mib_s']) / med(d['curl']['mib_s']):.2f}**, "
        f"cvnotify / Python SDK = **{med(d['cvnotify']['mib_s']) / med(d['python']['mib_s']):.2f}** "
        "(targets: at least 0.90 of curl, within 40 MiB of idle RSS).",
        "",
    ]


DOWNLOAD_TITLE = "## 8. Model download"


def write_download_section(r):
    """Writes section 8 into BENCHMARKS.md in place (`scripts/bench
    download`), keeping section 9 after it."""
    path = os.path.join(ROOT, "BENCHMARKS.md")
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    head = text.split(DOWNLOAD_TITLE)[0].rstrip("\n")
    after = TRACES_TITLE + text.split(TRACES_TITLE, 1)[1] if TRACES_TITLE in text else ""
    stamp = (f"Run alone by `scripts/bench download` on {datetime.utcnow().strftime('%Y-%m-%d %H:%M')} UTC, "
             f"min / median / max over {RUNS} runs, load average {os.getloadavg()[0]:.1f} on "
             f"{os.cpu_count()} cores at the end (a shared machine: compare within the table).\n\n")
    section = "\n".join(download_section(r)).replace("\n\n", "\n\n" + stamp, 1)
    with open(path, "w") as fh:
        fh.write(head + "\n\n" + section.rstrip("\n") + "\n" + ("\n" + after if after else ""))


TRACES_TITLE = "## 9. Traces"


class OtlpSink:
    """A loopback OTLP/HTTP receiver: answers 200 to every POST and counts
    requests and bytes (the spans are not decoded)."""

    def __init__(self):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        sink = self
        self.requests = 0
        self.bytes = 0

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("content-length", "0"))
                self.rfile.read(n)
                sink.requests += 1
                sink.bytes += n
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def scenario_traces(results):
    log("== 9. drain, Azurite, traces off vs exported to a loopback OTLP receiver")
    sink = OtlpSink()
    rows = {"off": [], "on": []}
    for run in range(RUNS):
        for mode in ("off", "on"):
            os.environ["BENCH_CVNOTIFY_EXTRA"] = (
                "" if mode == "off" else f"[telemetry]\notlp_endpoint = \"http://127.0.0.1:{sink.port}\"\n")
            az = Azurite()
            name = f"traces-{mode}-{run}-{uuid.uuid4().hex[:6]}"
            q = az.queue(name)
            secs = 0.0
            for _ in range(4):
                send_many(q, 500)
                s, _ = run_peer("cvnotify", az.endpoint, az.conn, name, 500)
                secs += s
            rows[mode].append(2000 / secs)
            log(f"  run {run + 1} traces {mode}: {2000 / secs:,.0f} msg/s")
            az.stop()
    os.environ.pop("BENCH_CVNOTIFY_EXTRA", None)
    rows["ratio"] = [on / off for on, off in zip(rows["on"], rows["off"])]
    results["traces"] = rows
    results["traces_sink"] = {"requests": sink.requests, "bytes": sink.bytes}


def traces_section(r):
    t = r["traces"]
    sink = r["traces_sink"]
    return [
        TRACES_TITLE,
        "",
        "The Azurite drain of section 1 (2,000 messages in 4 batches of 500, a fresh Azurite per run) by cvnotify with "
        "traces off, then with every span exported over OTLP/HTTP to a loopback receiver (`[telemetry] otlp_endpoint`) "
        f"that answered 200 to all {sink['requests']:,} export requests ({sink['bytes'] / 1e6:,.1f} MB of protobuf).",
        "",
        "| traces off, msg/s | traces exported, msg/s | ratio on / off |",
        "|---|---|---|",
        f"| {fmt(t['off'])} | {fmt(t['on'])} | {fmt(t['ratio'], 2)} |",
        "",
        f"Median ratio {statistics.median(t['ratio']):.2f} (target: at least 0.95).",
        "",
    ]


def write_traces_section(r):
    """Writes section 9 into BENCHMARKS.md in place (`scripts/bench
    traces`), keeping the sections after it."""
    write_section(TRACES_TITLE, traces_section(r), "traces")


# An Event Grid BlobCreated as Event Grid delivers it to a queue: the Event
# Grid schema, base64 (the docs' example, with a model blob).
GRID_BODY = __import__("base64").b64encode(json.dumps({
    "topic": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/ml/providers/Microsoft.Storage/storageAccounts/acct",
    "subject": "/blobServices/default/containers/models/blobs/automl/run-1/model.onnx",
    "eventType": "Microsoft.Storage.BlobCreated",
    "eventTime": "2026-11-21T06:01:11.7371234Z",
    "id": "831e1650-001e-001b-66ab-eeb76e069631",
    "data": {"api": "PutBlockList", "clientRequestId": "6d79dbfb-0e37-4fc4-981f-442c9ca65760",
             "requestId": "831e1650-001e-001b-66ab-eeb76e000000", "eTag": "\"0x8D4BCC2E4835CD0\"",
             "contentType": "application/octet-stream", "contentLength": 524288, "blobType": "BlockBlob",
             "url": "https://acct.blob.core.windows.net/models/automl/run-1/model.onnx",
             "sequencer": "00000000000004420000000000028963",
             "storageDiagnostics": {"batchId": "b68529f3-68cd-4744-baa4-3c0498ec19f0"}},
    "dataVersion": "", "metadataVersion": "1"}).encode()).decode()
EVENTGRID_TITLE = "## 10. Event Grid events"


def scenario_eventgrid(results):
    log("== 10. drain, Custom Vision messages vs Event Grid events (base64 BlobCreated), same log handler")
    n = int(os.environ.get("BENCH_FAST_N", "50000"))
    rows = {"azurite_cv": [], "azurite_grid": [], "fast_cv": [], "fast_grid": [],
            "fast_cv_cpu": [], "fast_grid_cpu": []}
    for run in range(RUNS):
        for mode, body in (("cv", BODY), ("grid", GRID_BODY)):
            secs, _ = drain_azurite("cvnotify", f"grid-{mode}-{run}", body)
            rows[f"azurite_{mode}"].append(2000 / secs)
            log(f"  run {run + 1} {mode} Azurite: {2000 / secs:,.0f} msg/s")
        fast = Fast()
        for mode, body in (("cv", BODY), ("grid", GRID_BODY)):
            # Section 2's drain: the in-memory fixture, where the daemon's own work shows.
            q = f"fast-grid-{mode}-{run}"
            fast.fill(q, n, body=body)
            secs, cpu = run_peer("cvnotify", fast.endpoint, "", q, n)
            assert fast.stats(q)["remaining"] == 0
            rows[f"fast_{mode}"].append(n / secs)
            rows[f"fast_{mode}_cpu"].append(cpu / n * 1e6)
            log(f"  run {run + 1} {mode} in-memory: {n / secs:,.0f} msg/s, {cpu / n * 1e6:,.1f} µs CPU/msg")
        fast.stop()
    rows["azurite_ratio"] = [g / c for g, c in zip(rows["azurite_grid"], rows["azurite_cv"])]
    rows["fast_ratio"] = [g / c for g, c in zip(rows["fast_grid"], rows["fast_cv"])]
    results["eventgrid"] = rows
    results["fast_n"] = n


def eventgrid_section(r):
    g = r["eventgrid"]
    return [
        EVENTGRID_TITLE,
        "",
        "The same drains and the same handler (`log`) with Custom Vision `Training` messages, then with Event Grid "
        "events as Event Grid delivers them to a queue: base64, the Event Grid schema, the docs' `BlobCreated` "
        f"({len(GRID_BODY)} bytes against {len(BODY)}), decoded into `blob_created` (URL validated, container and "
        "blob from the subject). Azurite: section 1's drain (2,000 messages in 4 batches of 500, a fresh Azurite per run); "
        f"in-memory: section 2's ({r['fast_n']:,} messages).",
        "",
        "| drain | Custom Vision, msg/s | Event Grid, msg/s | ratio Event Grid / Custom Vision |",
        "|---|---|---|---|",
        f"| Azurite | {fmt(g['azurite_cv'])} | {fmt(g['azurite_grid'])} | {fmt(g['azurite_ratio'], 2)} |",
        f"| in-memory | {fmt(g['fast_cv'])} | {fmt(g['fast_grid'])} | {fmt(g['fast_ratio'], 2)} |",
        "",
        f"CPU per message in memory: Custom Vision {fmt(g['fast_cv_cpu'], 1)} µs, Event Grid {fmt(g['fast_grid_cpu'], 1)} µs. "
        f"Median ratios: Azurite **{statistics.median(g['azurite_ratio']):.2f}**, "
        f"in-memory **{statistics.median(g['fast_ratio']):.2f}**.",
        "",
    ]


def write_section(title, lines, what):
    """Writes one section into BENCHMARKS.md in place: replaces the section
    `title` up to the next one, or adds it at the end."""
    path = os.path.join(ROOT, "BENCHMARKS.md")
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    stamp = (f"Run by `scripts/bench {what}` on {datetime.utcnow().strftime('%Y-%m-%d %H:%M')} UTC, "
             f"min / median / max over {RUNS} runs, load average {os.getloadavg()[0]:.1f} on "
             f"{os.cpu_count()} cores at the end (a shared machine: compare within the table).\n\n")
    section = "\n".join(lines).replace("\n\n", "\n\n" + stamp, 1).rstrip("\n") + "\n"
    if title in text:
        head, rest = text.split(title, 1)
        tail = rest[rest.index("\n## "):].lstrip("\n") if "\n## " in rest else ""
    else:
        head, tail = text, ""
    out = head.rstrip("\n") + "\n\n" + section
    if tail:
        out += "\n" + tail
    with open(path, "w") as fh:
        fh.write(out)


def versions():
    def out(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True).stdout.strip().splitlines()[0]
        except Exception:
            return "?"
    with open(os.path.join(ROOT, "package.json")) as f:
        azurite = json.load(f)["devDependencies"]["azurite"]
    import importlib.metadata as md
    mem = int(re.search(r"MemTotal:\s+(\d+)", open("/proc/meminfo").read()).group(1)) / 1024 / 1024
    return {
        "cores": os.cpu_count(),
        "memory": f"{mem:.1f} GiB",
        "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?"),
        "kernel": platform.release(),
        "cvnotify": out([BIN, "--version"]),
        "rustc": out(["rustc", "--version"]),
        "azurite": azurite,
        "node": out(["node", "--version"]),
        "python": platform.python_version(),
        "azure-storage-queue (Python)": md.version("azure-storage-queue"),
        "azure-storage-blob (Python)": md.version("azure-storage-blob"),
        "curl": out(["curl", "--version"]),
    }


def write_report(r, started):
    d = r["drain_azurite"]
    f = r["drain_fast"]
    med = lambda v: statistics.median(v)
    lines = [
        "# Benchmarks",
        "",
        f"Written by `scripts/bench` on {datetime.utcnow().strftime('%Y-%m-%d %H:%M')} UTC in {time.time() - started:.0f} s. "
        f"Every figure is **min / median / max over {RUNS} runs** made in this one run, everything on loopback. "
        "These machines are shared, so compare ratios within the table, not with other runs.",
        "",
        "| machine | |", "|---|---|",
    ]
    for k, v in versions().items():
        lines.append(f"| {k} | {v} |")
    lines += [
        "",
        "## 1. Drain, Azurite",
        "",
        "2,000 messages per run, sent in 4 batches of 500 (queue depth at most 500: Azurite slows down as a queue grows). "
        "Each batch is drained by a fresh consumer process; the time runs from its first receive to its last delete. "
        "CPU is the consumer's user + system time, minus the median CPU of the same consumer starting on an empty queue "
        f"(start-up: cvnotify {r['baseline_cpu']['cvnotify'] * 1000:.0f} ms, Python {r['baseline_cpu']['python'] * 1000:.0f} ms, "
        f"raw ceiling {r['baseline_cpu']['raw'] * 1000:.0f} ms).",
        "",
        "| consumer | messages/s | CPU µs per message |",
        "|---|---|---|",
    ]
    for kind, label in PEERS:
        lines.append(f"| {label} | {fmt(d[kind]['rate'])} | {fmt(d[kind]['cpu_us'])} |")
    lines += [
        "",
        f"Median ratios: cvnotify / raw ceiling = **{med(d['cvnotify']['rate']) / med(d['raw']['rate']):.2f}**, "
        f"cvnotify / sequential Python = **{med(d['cvnotify']['rate']) / med(d['python']['rate']):.2f}**, "
        f"cvnotify / pooled Python = **{med(d['cvnotify']['rate']) / med(d['python-pool']['rate']):.2f}** "
        "(targets: at least 0.90 of the raw ceiling, at least 2 × sequential Python).",
        "",
        "## 2. Drain, in-memory fixture",
        "",
        f"{r['fast_n']:,} messages per run from `examples/fast_queue.rs`, a benchmark fixture that implements only the Queue "
        "REST calls the daemon uses, in memory (never used in place of Azurite in tests). It shows the daemon's own ceiling.",
        "",
        "| consumer | messages/s | CPU µs per message |",
        "|---|---|---|",
        f"| cvnotify (log handler to a file) | {fmt(f['cvnotify']['rate'])} | {fmt(f['cvnotify']['cpu_us'], 1)} |",
        f"| raw ceiling | {fmt(f['raw']['rate'])} | {fmt(f['raw']['cpu_us'], 1)} |",
        "",
        f"Targets: at least 5,000 messages/s, at most 100 µs CPU per message. Median cvnotify / raw ceiling = "
        f"**{med(f['cvnotify']['rate']) / med(f['raw']['rate']):.2f}**.",
        "",
        "## 3. Latency",
        "",
        "Time from just before `send` to the log handler's record of the event, over 200 messages sent at 5 per second, "
        "against Azurite. Under load, scenario 1's load runs beside it: 2,000 messages sent to another queue, depth at most 500, "
        "drained by another cvnotify.",
        "",
        "| setting | p50 ms | p95 ms | p99 ms |",
        "|---|---|---|---|",
    ]
    labels = {"1s": "`max_poll_interval = 1s`", "default": "default (`max_poll_interval = 10s`)", "load": "`1s`, under load"}
    for k in ("1s", "default", "load"):
        rows = r["latency"][k]
        lines.append(f"| {labels[k]} | {fmt([x[0] for x in rows])} | {fmt([x[1] for x in rows])} | {fmt([x[2] for x in rows])} |")
    lines += [
        "",
        f"Messages not seen within 12 s of the last send: {r['latency_lost']}.",
        "",
        "## 4. Idle cost",
        "",
        f"A daemon with default settings on an empty queue (the fixture counts its requests), run for at least {120 + IDLE_WARMUP} s. "
        "Requests per minute are given over the whole run, which includes the start-up ramp of the back-off (100 ms doubling "
        f"to 10 s: 7 receives in the first 13 s), and in steady state over the last 120 s or more (after {IDLE_WARMUP} s).",
        "",
        "| RSS MiB | CPU % of a core | requests per minute, whole run | requests per minute, steady state |",
        "|---|---|---|---|",
        f"| {fmt(r['idle']['rss_mib'], 1)} | {fmt(r['idle']['cpu_pct'], 3)} | {fmt(r['idle']['req_per_min'], 1)} | {fmt(r['idle']['steady_req_per_min'], 1)} |",
        "",
        "Targets: RSS at most 20 MiB, CPU at most 0.2 %, at most 7 requests per minute.",
        "",
        "## 5. Start-up",
        "",
        f"From exec to the first receive request reaching the fixture, Shared Key (no token round trip), {len(r['startup_ms'])} runs.",
        "",
        "| ms |",
        "|---|",
        f"| {fmt(r['startup_ms'], 1)} |",
        "",
        "Target: under 50 ms.",
        "",
    ]
    if "notice" in r:
        lines += notice_section(r)
    if "queues" in r:
        lines += queues_section(r)
    if "download" in r:
        lines += download_section(r)
    if "traces" in r:
        lines += traces_section(r)
    if "eventgrid" in r:
        lines += eventgrid_section(r)
    with open(os.path.join(ROOT, "BENCHMARKS.md"), "w") as fh:
        fh.write("\n".join(lines))
    with open(os.path.join(ROOT, "target/bench-results.json"), "w") as fh:
        json.dump(r, fh, indent=1)


def queue_of(record):
    """The queue a log record is about: its message span's `queue`."""
    for span in record.get("spans") or []:
        if "queue" in span:
            return span["queue"]
    return None


def drain_queues(azurites, n):
    """One `run --once` daemon over one queue per Azurite in `azurites`, each
    holding `n` messages; returns each queue's rate (messages / seconds from
    the daemon's first "Listening" line to that queue's last handled one)."""
    names = [f"mq-{i}-{uuid.uuid4().hex[:6]}" for i in range(len(azurites))]
    for az, name in zip(azurites, names):
        send_many(az.queue(name), n)
    if len(azurites) == 1:
        text = open(config(azurites[0].endpoint, names[0])).read()
    else:
        text = 'max_concurrency = 32\n[auth]\nmode = "connection_string"\nconnection_string = "UseDevelopmentStorage=true"\n' \
               '[log]\nformat = "json"\n[[handlers]]\ntype = "log"\n'
        for az, name in zip(azurites, names):
            text += f'[[queues]]\nname = "{name}"\nendpoint = "{az.endpoint}"\n'
    path = os.path.join(WORK, f"{names[0]}-multi.toml")
    with open(path, "w") as f:
        f.write(text)
    out_path = path + ".out"
    with open(out_path, "w") as out:
        subprocess.run([BIN, "--config", path, "run", "--once"], stdout=out, stderr=subprocess.DEVNULL, check=True)
    records = [json.loads(l) for l in open(out_path) if l.startswith("{")]
    start = min(ts_ns(r) for r in records if r.get("message") == "Listening for Custom Vision notifications")
    rates = []
    for name in names:
        handled = [ts_ns(r) for r in records if r.get("message") == "Message handled" and queue_of(r) == name]
        assert len(handled) == n, f"{name}: handled {len(handled)} of {n}"
        rates.append(n / ((max(handled) - start) / 1e9))
    os.remove(out_path)
    return rates


def scenario_queues(results):
    n = int(os.environ.get("BENCH_QUEUES_N", "500"))
    log(f"== 6. two queues at once vs one: {n} messages per queue, each queue in its own Azurite")
    rows = {"one": [], "two": [], "ratio": []}
    for run in range(RUNS):
        # Fresh Azurites every run (they slow down as their history grows).
        az = [Azurite(), Azurite()]
        one = drain_queues(az[:1], n)[0]
        two = drain_queues(az, n)
        for a in az:
            a.stop()
        per_queue = statistics.mean(two)
        rows["one"].append(one)
        rows["two"].append(per_queue)
        rows["ratio"].append(per_queue / one)
        results["queues_n"] = n
        log(f"  run {run + 1}: one queue {one:,.0f} msg/s; two at once {two[0]:,.0f} + {two[1]:,.0f} msg/s; "
            f"per-queue ratio {per_queue / one:.2f}")
    results["queues"] = rows


def main():
    started = time.time()
    only = sys.argv[1:]
    results = {}
    for name, fn in [("drain", scenario_drain_azurite), ("fast", scenario_drain_fast),
                     ("latency", scenario_latency_and_idle), ("startup", scenario_startup),
                     ("notice", scenario_notice), ("queues", scenario_queues),
                     ("download", scenario_download), ("traces", scenario_traces),
                     ("eventgrid", scenario_eventgrid)]:
        if not only or name in only:
            fn(results)
    if not only:
        write_report(results, started)
        log(f"wrote BENCHMARKS.md in {time.time() - started:.0f} s")
    else:
        if "notice" in results:
            update_notice_section(results)
        if "queues" in results:
            update_queues_section(results)
        if "download" in results:
            write_download_section(results)
            log("\n".join(download_section(results)))
        if "traces" in results:
            write_traces_section(results)
            log("\n".join(traces_section(results)))
        if "eventgrid" in results:
            write_section(EVENTGRID_TITLE, eventgrid_section(results), "eventgrid")
            log("\n".join(eventgrid_section(results)))
        print(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
