#!/usr/bin/env python3
"""Soak test of a 3-replica Bayou cluster: memory, disk and restart time must
follow the live data and the retention window, not the length of history.

Two workloads, each on a fresh cluster with the default retention:

* SETs over 10^3 keys (100-byte values), up to 10^7 writes;
* SETs over 10^6 keys (100-byte values), up to 10^6 writes.

Writes go to replica A with redis-benchmark (-P 16, 50 clients); anti-entropy
runs every 100 ms. At each decade of writes (and at the maximum, e.g.
--max-small 3000000, when it is not a decade) the script waits until every
replica has committed them, then prints for each replica its RSS, the size of
its data directory, its retained writes, and the time a restart of replica B
(SIGKILL, then start) takes until it answers PING.

It also measures catch-up: replica B is kept offline while the others write
and truncate 10^6 writes (10^3 keys); when it comes back it catches up by a
full-state transfer over TCP (time, bytes); and the same state is carried
from A to an empty replica as bundle files (time, bytes).

Usage: bench/bayou-soak.py [--max-small 10000000] [--max-large 1000000]
       [--catch-up 1000000] [--quick]   (--quick: 10^5 each, a few minutes;
       0 skips a part)
Needs redis-benchmark and redis-cli (Debian: redis-tools).
BAYOU_BIN may point to a built `bayou`; otherwise it is built (release).
"""

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def cli(port, *args, raw=False):
    out = subprocess.run(
        ["redis-cli", "-p", str(port)] + (["--raw"] if raw else []) + list(args),
        capture_output=True,
        check=True,
    ).stdout
    return out.decode(errors="replace").strip()


def status(port):
    lines = cli(port, "BAYOU.STATUS", raw=True).splitlines()
    return dict(zip(lines[0::2], lines[1::2]))


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def du(path):
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            total += os.path.getsize(os.path.join(dirpath, name))
    return total


def mb(n):
    return f"{n / 1e6:8.1f}"


class Cluster:
    def __init__(self, binary, work, ids=("P", "A", "B")):
        self.binary, self.work, self.ids = binary, work, ids
        self.ports = {i: free_port() for i in ids}
        self.procs = {}

    def args(self, rid):
        a = [
            self.binary, "serve", "--id", rid, "--primary", self.ids[0],
            "--listen", f"127.0.0.1:{self.ports[rid]}",
            "--data-dir", os.path.join(self.work, rid),
            "--sync-interval-ms", "100",
        ]
        for other in self.ids:
            if other != rid:
                a += ["--peer", f"{other}=127.0.0.1:{self.ports[other]}"]
        return a

    def start(self, rid):
        log = open(os.path.join(self.work, f"{rid}.log"), "ab")
        t0 = time.monotonic()
        self.procs[rid] = subprocess.Popen(
            self.args(rid), stdout=subprocess.DEVNULL, stderr=log,
            env=dict(os.environ, RUST_LOG="info"),
        )
        while True:
            try:
                if cli(self.ports[rid], "PING") == "PONG":
                    return time.monotonic() - t0
            except subprocess.CalledProcessError:
                pass
            if self.procs[rid].poll() is not None:
                sys.exit(f"replica {rid} exited; see {self.work}/{rid}.log")
            time.sleep(0.01)

    def kill(self, rid):
        p = self.procs.pop(rid)
        p.send_signal(signal.SIGKILL)
        p.wait()

    def stop(self):
        for rid in list(self.procs):
            self.procs[rid].terminate()
            self.procs[rid].wait()
        self.procs.clear()

    def wait_committed(self, csn, timeout=900):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(int(status(self.ports[r])["csn"]) >= csn for r in self.procs):
                return
            time.sleep(0.2)
        sys.exit(f"replicas did not commit {csn} writes in {timeout} s")


def bench(port, n, keys, clients=50, pipeline=16):
    subprocess.run(
        ["redis-benchmark", "-p", str(port), "-t", "set", "-n", str(n), "-r", str(keys),
         "-d", "100", "-c", str(clients), "-P", str(pipeline), "-q"],
        stdout=subprocess.DEVNULL, check=True,
    )


def soak(binary, label, keys, max_writes):
    work = tempfile.mkdtemp(prefix="bayou-soak-")
    c = Cluster(binary, work)
    for rid in c.ids:
        c.start(rid)
    print(f"\n{label}: SETs over {keys:,} keys, 100-byte values, through A; default retention")
    print(f"{'writes':>10} {'replica':>7} {'RSS MB':>8} {'disk MB':>8} {'retained':>9} {'osn':>10}   restart of B")
    # Every decade up to max_writes, and max_writes itself if it is not one.
    steps = [10 ** e for e in range(4, 12) if 10 ** e <= max_writes]
    if max_writes not in steps:
        steps.append(max_writes)
    done = 0
    for decade in steps:
        t0 = time.monotonic()
        bench(c.ports["A"], decade - done, keys)
        c.wait_committed(decade)
        took = time.monotonic() - t0
        done = decade
        c.kill("B")
        restart = c.start("B")
        for rid in c.ids:
            st = status(c.ports[rid])
            extra = f"   {restart:.2f} s" if rid == "B" else ""
            if rid == "P":
                extra = f"   ({took:.0f} s for this decade)"
            print(f"{done:>10,} {rid:>7} {mb(rss(c.procs[rid].pid))} {mb(du(os.path.join(work, rid)))}"
                  f" {st['retained_writes']:>9} {st['osn']:>10}{extra}")
    live = int(status(c.ports["P"])["keys"]) * (100 + 16)
    print(f"live data at the end: about {mb(live).strip()} MB ({status(c.ports['P'])['keys']} keys x (100-byte value + key))")
    c.stop()
    shutil.rmtree(work)


def catch_up(binary, writes):
    work = tempfile.mkdtemp(prefix="bayou-catchup-")
    c = Cluster(binary, work, ids=("P", "A", "B", "C"))
    for rid in c.ids:
        c.start(rid)
    for rid in ("B", "C"):
        cli(c.ports[rid], "BAYOU.OFFLINE")
    bench(c.ports["A"], writes, 1000)
    deadline = time.monotonic() + 600
    while int(status(c.ports["P"])["csn"]) < writes or int(status(c.ports["A"])["csn"]) < writes:
        if time.monotonic() > deadline:
            sys.exit("P and A did not commit")
        time.sleep(0.2)
    for rid in ("P", "A"):
        cli(c.ports[rid], "BAYOU.TRUNCATE")
    print(f"\ncatch-up: B and C offline while P and A commit and truncate {writes:,} writes (1,000 keys)")
    sent_before = int(status(c.ports["A"])["peer_bytes_sent"]) + int(status(c.ports["P"])["peer_bytes_sent"])
    t0 = time.monotonic()
    cli(c.ports["B"], "BAYOU.ONLINE")
    out = cli(c.ports["B"], "BAYOU.SYNC", "A")
    took = time.monotonic() - t0
    st = status(c.ports["B"])
    got = int(status(c.ports["B"])["peer_bytes_received"])
    print(f"  over TCP (B syncs with A): {took:.3f} s, {got:,} bytes received, B at CSN {st['csn']} OSN {st['osn']}, {st['keys']} keys")
    bundle_dir = os.path.join(work, "bundles")
    os.makedirs(bundle_dir)
    t0 = time.monotonic()
    subprocess.run([binary, "bundle", "export", "--from", f"127.0.0.1:{c.ports['A']}",
                    "--to", f"127.0.0.1:{c.ports['C']}", "--out", os.path.join(bundle_dir, "a-to-c")],
                   check=True, stdout=subprocess.DEVNULL)
    files = sorted(os.path.join(bundle_dir, f) for f in os.listdir(bundle_dir))
    subprocess.run([binary, "bundle", "import", "--to", f"127.0.0.1:{c.ports['C']}"] + files,
                   check=True, stdout=subprocess.DEVNULL)
    took = time.monotonic() - t0
    size = sum(os.path.getsize(f) for f in files)
    st = status(c.ports["C"])
    print(f"  by bundle files (A -> files -> C): {took:.3f} s, {len(files)} file(s), {size:,} bytes, C at CSN {st['csn']} OSN {st['osn']}, {st['keys']} keys")
    c.stop()
    shutil.rmtree(work)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--max-small", type=int, default=10_000_000)
    ap.add_argument("--max-large", type=int, default=1_000_000)
    ap.add_argument("--catch-up", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    if a.quick:
        a.max_small, a.max_large, a.catch_up = 100_000, 100_000, 100_000
    for tool in ("redis-benchmark", "redis-cli"):
        if shutil.which(tool) is None:
            sys.exit(f"missing {tool} (apt-get install redis-tools)")
    binary = os.environ.get("BAYOU_BIN")
    if not binary:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "bayou-cli"], cwd=ROOT, check=True)
        target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
        binary = os.path.join(target, "release", "bayou")
    print(f"bayou soak on {os.cpu_count()} cores; {binary}")
    if a.max_small:
        soak(binary, "small key space", 1_000, a.max_small)
    if a.max_large:
        soak(binary, "large key space", 1_000_000, a.max_large)
    if a.catch_up:
        catch_up(binary, a.catch_up)


if __name__ == "__main__":
    main()
