#!/usr/bin/env python3
"""A long run of mixed load with a fault every minute.

Starts its own redis-server (appendonly, so a kill keeps its data) on a
free loopback port and a release seqd in Redis mode whose data directory
is a tmpfs of its own (to fill), and drives 6 connections of mixed
requests (daily numbers of 20,000 users, 500 groups, gap checks on 200
streams, cache reads and writes of 2,000 keys) while, once a minute in
turn: Redis hangs (SIGSTOP) for 3 s; Redis is killed and restarted 5 s
later; Redis restarts empty; seqd reloads (SIGHUP); the data directory's
disk fills for 5 s, then is freed.

Prints a line every 10 s (answers/s, errors by kind, seqd's RSS) and at
the end: numbers answered twice (must be none), error replies outside the
documented ones (must be none), and RSS and throughput of the first and
last tenth of the run. Exits 1 when a promise broke. Needs root (mount).

Usage: bench/soak.py [minutes]   (default 30)
"""
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MINUTES = float(sys.argv[1]) if len(sys.argv) > 1 else 30.0


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def redis_cli(port, *args):
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True).stdout


class Redis:
    def __init__(self, work):
        self.dir = os.path.join(work, "redis")
        os.makedirs(self.dir)
        self.port = free_port()
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "everysec", "--dir", self.dir],
            stdout=subprocess.DEVNULL)
        while "PONG" not in redis_cli(self.port, "ping"):
            time.sleep(0.05)

    def kill(self):
        self.proc.kill()
        self.proc.wait()

    def wipe(self):
        for f in os.listdir(self.dir):
            p = os.path.join(self.dir, f)
            if os.path.isdir(p):
                for g in os.listdir(p):
                    os.remove(os.path.join(p, g))
            else:
                os.remove(p)


def main():
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "seqd"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp()
    data = os.path.join(work, "data")
    os.makedirs(data)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", data], check=True)
    redis = Redis(work)
    sock = os.path.join(work, "seqd.sock")
    env = dict(os.environ, REDIS_URL=f"redis://127.0.0.1:{redis.port}/0", SEQD_LOG="info")
    seqd = subprocess.Popen(
        [os.path.join(ROOT, "target/release/seqd"), "--socket", sock, "--data-dir", os.path.join(data, "d"),
         "--redis-timeout-ms", "250"],
        env=env, stderr=open(os.path.join(work, "seqd.log"), "w"))
    while not os.path.exists(sock):
        time.sleep(0.05)

    stop = threading.Event()
    lock = threading.Lock()
    issued = {}  # key -> list of numbers
    counts = {"answers": 0}
    errors = {}
    bad = []

    def client(n):
        rnd = random.Random(n)
        s = socket.socket(socket.AF_UNIX)
        s.connect(sock)
        f = s.makefile("rwb", buffering=0)
        rf = s.makefile("rb")
        while not stop.is_set():
            batch = []
            for _ in range(32):
                r = rnd.random()
                if r < 0.4:
                    batch.append(("daily", f"DAILY NEXT soak{rnd.randrange(20000)}"))
                elif r < 0.7:
                    batch.append(("conv", f"CONV NEXT group soak{rnd.randrange(500)}"))
                elif r < 0.8:
                    batch.append(("gap", f"GAP CHECK ex sym{rnd.randrange(200)} {rnd.randrange(1, 10**6)}"))
                elif r < 0.95:
                    batch.append(("get", f"CACHE GET soak:{rnd.randrange(2000)}"))
                else:
                    batch.append(("set", f"CACHE SET soak:{rnd.randrange(2000)} v{rnd.randrange(10**6)}"))
            f.write("".join(c + "\n" for _, c in batch).encode())
            got = []
            for kind, cmd in batch:
                line = rf.readline().decode()
                if not line.endswith("\n"):
                    bad.append(f"connection closed at {cmd}")
                    stop.set()
                    return
                line = line.rstrip("\n")
                got.append((kind, cmd, line))
            with lock:
                for kind, cmd, line in got:
                    counts["answers"] += 1
                    if line.startswith("OK"):
                        if kind in ("daily", "conv"):
                            fields = dict(p.split("=", 1) for p in line.split()[1:] if "=" in p)
                            key = cmd.split(" ", 2)[2] + "@" + fields.get("day", "")
                            issued.setdefault(key, []).append(int(fields["seq"]))
                    elif line.startswith("ERR unavailable "):
                        errors[kind] = errors.get(kind, 0) + 1
                    else:
                        bad.append(f"{cmd}: {line}")

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(6)]
    for t in threads:
        t.start()

    def rss():
        with open(f"/proc/{seqd.pid}/status") as st:
            for l in st:
                if l.startswith("VmRSS:"):
                    return int(l.split()[1]) // 1024
        return 0

    def fill():
        path = os.path.join(data, "filler")
        with open(path, "wb") as out:
            try:
                while True:
                    out.write(b"\0" * 65536)
                    out.flush()
            except OSError:
                pass
        return path

    faults = ["hang", "kill", "restart empty", "reload", "disk full"]
    start = time.time()
    samples = []
    last = (start, 0)
    next_fault = start + 30
    fault_i = 0
    end = start + MINUTES * 60
    while time.time() < end and not stop.is_set():
        time.sleep(10)
        now = time.time()
        with lock:
            answered = counts["answers"]
            errs = dict(errors)
        rate = (answered - last[1]) / (now - last[0])
        last = (now, answered)
        samples.append((now - start, rate, rss()))
        print(f"{now - start:7.0f} s  {rate:9.0f} answers/s  rss {samples[-1][2]} MiB  unavailable {errs}", flush=True)
        if now >= next_fault:
            name = faults[fault_i % len(faults)]
            fault_i += 1
            next_fault += 60
            print(f"          fault: {name}", flush=True)
            if name == "hang":
                os.kill(redis.proc.pid, signal.SIGSTOP)
                time.sleep(3)
                os.kill(redis.proc.pid, signal.SIGCONT)
            elif name == "kill":
                redis.kill()
                time.sleep(5)
                redis.start()
            elif name == "restart empty":
                redis.kill()
                redis.wipe()
                redis.start()
            elif name == "reload":
                os.kill(seqd.pid, signal.SIGHUP)
            else:
                p = fill()
                time.sleep(5)
                os.remove(p)
    stop.set()
    for t in threads:
        t.join(timeout=10)
    dupes = {k: v for k, v in issued.items() if len(v) != len(set(v))}
    seqd.terminate()
    seqd.wait()
    redis.kill()
    subprocess.run(["umount", "-l", data])
    tenth = max(1, len(samples) // 10)
    first, lastp = samples[:tenth], samples[-tenth:]
    avg = lambda xs, i: sum(x[i] for x in xs) / len(xs)
    print(f"answers: {counts['answers']}, numbers: {sum(len(v) for v in issued.values())} "
          f"of {len(issued)} keys, unavailable by kind: {errors}")
    print(f"numbers answered twice: {sum(len(v) - len(set(v)) for v in dupes.values())}")
    print(f"error replies outside the documented ones: {len(bad)} {bad[:5]}")
    print(f"first tenth: {avg(first, 1):.0f} answers/s, RSS {avg(first, 2):.0f} MiB; "
          f"last tenth: {avg(lastp, 1):.0f} answers/s, RSS {avg(lastp, 2):.0f} MiB")
    sys.exit(1 if dupes or bad else 0)


if __name__ == "__main__":
    main()
