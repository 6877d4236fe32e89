#!/usr/bin/env python3
"""Chord (this repository, `chord serve`) against Kademlia (PyPI `kademlia`,
bmuller's asyncio implementation) on loopback networks of the same size.

    python3 bench/chord-vs-kademlia.py [--nodes 16] [--lookups 2000] [--clients 8]
                                       [--skip-build] [--skip-redis-benchmark]

What it does:

1. builds `chord` in release mode (cargo) and installs `kademlia` into a venv
   (under the cargo target directory) with pip;
2. starts N `chord serve` processes on 127.0.0.1 (one creates the ring, the
   others join), waits until every successor and predecessor is right, and
   lets the finger tables fill;
3. starts N Kademlia processes (ksize 20, alpha 3: the library's defaults)
   on UDP, each bootstrapped from the first and then from a few others, each
   with a small TCP control port on which `LOOKUP <hex key>` runs one node
   lookup (`NodeSpiderCrawl.find`, the lookup behind `set` and `get`);
4. from one asyncio client with `--clients` connections to random nodes, runs
   `--lookups` lookups of random keys per system and mode: Chord
   `CHORD.LOOKUP key ITERATIVE` and `... RECURSIVE` over RESP, Kademlia
   `LOOKUP` over its control port. Latency is measured at the client, from
   request to answer, so both include one loopback round trip to the node.
   Hops: Chord = len(path) - 1 (from CHORD.LOOKUP); Kademlia = rounds of the
   iterative crawl (each round sends up to alpha parallel find_node RPCs),
   and its RPC count is reported too;
5. prints lookups/s, median and p99 latency, mean/p99 hops, and the ratios
   Chord/Kademlia (throughput) and Kademlia/Chord (latency);
6. runs redis-benchmark (SET, GET, MSET, PING) against one Chord node.
"""

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))

KAD_NODE = r'''
import asyncio, sys, time, logging
from kademlia.network import Server
from kademlia.node import Node
from kademlia.crawling import NodeSpiderCrawl

logging.disable(logging.CRITICAL)
udp, ctl, boot = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]

class CountingCrawl(NodeSpiderCrawl):
    rounds = 0
    rpcs = 0
    async def _find(self, rpcmethod):
        self.rounds += 1
        async def counted(peer, node):
            self.rpcs += 1
            return await rpcmethod(peer, node)
        return await NodeSpiderCrawl._find(self, counted)

async def main():
    server = Server()  # ksize=20, alpha=3
    await server.listen(udp, interface="127.0.0.1")
    if boot:
        addrs = [("127.0.0.1", int(p)) for p in boot]
        await server.bootstrap(addrs)

    async def handle(reader, writer):
        while True:
            line = await reader.readline()
            if not line:
                break
            parts = line.decode().split()
            if parts[0] == "LOOKUP":
                key = bytes.fromhex(parts[1])
                node = Node(key)
                nearest = server.protocol.router.find_neighbors(node)
                spider = CountingCrawl(server.protocol, node, nearest, server.ksize, server.alpha)
                found = await spider.find()
                closest = found[0].port if found else 0
                writer.write(f"{spider.rounds} {spider.rpcs} {closest}\n".encode())
            elif parts[0] == "BOOT":
                await server.bootstrap([("127.0.0.1", int(p)) for p in parts[1:]])
                writer.write(b"OK\n")
            elif parts[0] == "SIZE":
                n = sum(len(b) for b in server.protocol.router.buckets)
                writer.write(f"{n}\n".encode())
            await writer.drain()
        writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", ctl)
    print("ready", flush=True)
    async with srv:
        await srv.serve_forever()

asyncio.run(main())
'''


def free_ports(n):
    socks, ports = [], []
    while len(ports) < n:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        p = s.getsockname()[1]
        socks.append(s)
        ports.append(p)
    for s in socks:
        s.close()
    return ports


def wait_port(port, timeout=20.0):
    t = time.time()
    while time.time() - t < timeout:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"port {port} did not open")


# ----- a minimal RESP client --------------------------------------------------

def resp_cmd(*args):
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(f"${len(b)}\r\n".encode() + b + b"\r\n")
    return b"".join(out)


async def resp_read(reader):
    line = await reader.readline()
    t, rest = line[:1], line[1:-2]
    if t == b"+":
        return rest.decode()
    if t == b"-":
        raise RuntimeError(rest.decode())
    if t == b":":
        return int(rest)
    if t == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = await reader.readexactly(n + 2)
        return data[:-2]
    if t == b"*":
        n = int(rest)
        return [await resp_read(reader) for _ in range(n)] if n >= 0 else None
    raise RuntimeError(f"bad reply {line!r}")


def sync_resp(port, *args):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(resp_cmd(*args))
    f = s.makefile("rb")

    def read():
        line = f.readline()
        t, rest = line[:1], line[1:-2]
        if t == b"*":
            n = int(rest)
            return [read() for _ in range(n)] if n >= 0 else None
        if t == b"$":
            n = int(rest)
            return None if n < 0 else f.read(n + 2)[:-2]
        if t == b":":
            return int(rest)
        if t == b"-":
            raise RuntimeError(rest.decode())
        return rest.decode()

    r = read()
    s.close()
    return r


# ----- measurement -----------------------------------------------------------

def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


async def run_lookups(ports, lookups, clients, one):
    """`one(reader, writer, key)` performs a lookup and returns hops (and extra)."""
    lat, hops, extra = [], [], []
    per = [lookups // clients + (1 if i < lookups % clients else 0) for i in range(clients)]
    rnd = random.Random(42)

    async def worker(n, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(n):
            key = rnd.getrandbits(160).to_bytes(20, "big")
            t = time.perf_counter()
            h, x = await one(reader, writer, key)
            lat.append(time.perf_counter() - t)
            hops.append(h)
            extra.append(x)
        writer.close()

    t = time.perf_counter()
    await asyncio.gather(*(worker(n, rnd.choice(ports)) for n in per))
    wall = time.perf_counter() - t
    return {
        "lookups": lookups,
        "lookups_per_s": lookups / wall,
        "median_ms": statistics.median(lat) * 1e3,
        "p99_ms": pct(lat, 99) * 1e3,
        "mean_hops": statistics.mean(hops),
        "p99_hops": pct(hops, 99),
        "mean_rpcs": statistics.mean(extra) if extra and extra[0] is not None else None,
    }


async def chord_lookup(mode):
    async def one(reader, writer, key):
        writer.write(resp_cmd("CHORD.LOOKUP", key.hex(), mode))
        owner, addr, path = await resp_read(reader)
        return len(path) - 1, None
    return one


async def kad_lookup(reader, writer, key):
    writer.write(f"LOOKUP {key.hex()}\n".encode())
    rounds, rpcs, _ = (await reader.readline()).split()
    return int(rounds), int(rpcs)


# ----- the two networks ------------------------------------------------------

def start_chord(n, tmp, binary):
    ports = free_ports(n)
    procs = []
    flags = ["--stabilize-ms", "200", "--fix-fingers-ms", "50", "--sync-ms", "1000"]
    for i, p in enumerate(ports):
        cmd = [binary, "serve", "--listen", f"127.0.0.1:{p}", "--data-dir", os.path.join(tmp, f"c{i}")] + flags
        if i > 0:
            cmd += ["--join", f"127.0.0.1:{ports[0]}"]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(p)
    # Wait for the correct ring: every successor and predecessor right.
    ids = {}
    for p in ports:
        info = sync_resp(p, "CHORD.INFO")
        d = dict(zip(info[::2], info[1::2]))
        ids[p] = d[b"id"].decode()
    order = sorted(ports, key=lambda p: ids[p])
    t = time.time()
    while True:
        ok = True
        for k, p in enumerate(order):
            succ = sync_resp(p, "CHORD.SUCCESSORS")
            pred = sync_resp(p, "CHORD.PREDECESSOR")
            want_s = f"127.0.0.1:{order[(k + 1) % n]}".encode()
            want_p = f"127.0.0.1:{order[k - 1]}".encode()
            if not succ or succ[0][1] != want_s or not pred or pred[1] != want_p:
                ok = False
                break
        if ok:
            break
        if time.time() - t > 60:
            raise SystemExit("chord ring did not converge")
        time.sleep(0.2)
    print(f"chord: {n}-node ring correct after {time.time() - t:.1f} s; letting fingers settle")
    time.sleep(4)
    return ports, procs


def start_kademlia(n, py, script):
    udp = free_ports(n)
    ctl = free_ports(n)
    procs = []
    for i in range(n):
        boot = [] if i == 0 else [str(udp[0])]
        procs.append(subprocess.Popen([py, script, str(udp[i]), str(ctl[i])] + boot,
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL))
        procs[-1].stdout.readline()
    # A second bootstrap round through random others fills the routing tables.
    for i in range(n):
        others = random.Random(i).sample(udp, min(3, n))
        s = socket.create_connection(("127.0.0.1", ctl[i]), timeout=30)
        s.sendall(("BOOT " + " ".join(map(str, others)) + "\n").encode())
        s.makefile().readline()
        s.close()
    sizes = []
    for c in ctl:
        s = socket.create_connection(("127.0.0.1", c), timeout=5)
        s.sendall(b"SIZE\n")
        sizes.append(int(s.makefile().readline()))
        s.close()
    print(f"kademlia: {n} nodes; routing-table sizes min {min(sizes)} max {max(sizes)}")
    return ctl, procs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=16)
    ap.add_argument("--lookups", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--skip-build", action="store_true")
    ap.add_argument("--skip-redis-benchmark", action="store_true")
    a = ap.parse_args()
    if not 2 <= a.nodes <= 64:
        raise SystemExit("--nodes must be in 2..64")

    if not a.skip_build:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "chord-cli"], cwd=REPO, check=True)
    binary = os.path.join(TARGET, "release", "chord")
    venv = os.path.join(TARGET, "bench-venv-kademlia")
    py = os.path.join(venv, "bin", "python")
    if not os.path.exists(py):
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    if subprocess.run([py, "-c", "import kademlia"], capture_output=True).returncode != 0:
        subprocess.run([py, "-m", "pip", "install", "-q", "kademlia==2.2.3"], check=True)
    kver = subprocess.run([py, "-c", "import importlib.metadata as m; print(m.version('kademlia'))"],
                          capture_output=True, text=True).stdout.strip()

    tmp = tempfile.mkdtemp(prefix="chord-bench-")
    script = os.path.join(tmp, "kad_node.py")
    with open(script, "w") as f:
        f.write(KAD_NODE)
    procs = []
    results = {}
    try:
        cports, cp = start_chord(a.nodes, tmp, binary)
        procs += cp
        for mode in ["ITERATIVE", "RECURSIVE"]:
            one = asyncio.run(chord_lookup(mode))
            asyncio.run(run_lookups(cports, 200, a.clients, one))  # warm-up
            results[f"chord {mode.lower()}"] = asyncio.run(run_lookups(cports, a.lookups, a.clients, one))
        for p in cp:
            p.send_signal(signal.SIGKILL)
            p.wait()
        procs = []
        kports, kp = start_kademlia(a.nodes, py, script)
        procs += kp
        asyncio.run(run_lookups(kports, 100, a.clients, kad_lookup))
        results[f"kademlia {kver}"] = asyncio.run(run_lookups(kports, a.lookups, a.clients, kad_lookup))
        for p in kp:
            p.send_signal(signal.SIGKILL)
            p.wait()
        procs = []

        print(f"\n{a.nodes} processes per network on 127.0.0.1, {a.lookups} lookups of random keys, "
              f"{a.clients} concurrent clients, {os.cpu_count()} cores")
        print(f"{'system':<22}{'lookups/s':>11}{'median ms':>11}{'p99 ms':>9}{'mean hops':>11}{'p99 hops':>10}{'RPCs':>7}")
        for name, r in results.items():
            rpcs = f"{r['mean_rpcs']:.1f}" if r["mean_rpcs"] is not None else "-"
            print(f"{name:<22}{r['lookups_per_s']:>11.0f}{r['median_ms']:>11.2f}{r['p99_ms']:>9.2f}"
                  f"{r['mean_hops']:>11.2f}{r['p99_hops']:>10}{rpcs:>7}")
        kad = results[f"kademlia {kver}"]
        print("\nratios against kademlia (>1 means chord is better):")
        for name in ["chord iterative", "chord recursive"]:
            r = results[name]
            print(f"  {name}: throughput x{r['lookups_per_s'] / kad['lookups_per_s']:.1f}, "
                  f"median latency x{kad['median_ms'] / r['median_ms']:.1f}, "
                  f"p99 latency x{kad['p99_ms'] / r['p99_ms']:.1f}")
        print(json.dumps({"nodes": a.nodes, "results": results}))

        if not a.skip_redis_benchmark:
            if shutil.which("redis-benchmark") is None:
                print("redis-benchmark not found (apt install redis-tools)")
            else:
                cports, cp = start_chord(a.nodes, tempfile.mkdtemp(prefix="chord-rb-"), binary)
                procs += cp
                for extra in [[], ["-P", "16"]]:
                    cmd = ["redis-benchmark", "-p", str(cports[0]), "-t", "ping,set,get,mset",
                           "-n", "20000", "-c", "20", "-r", "10000", "-q"] + extra
                    print("\n$ " + " ".join(cmd) + f"   # against one node of the {a.nodes}-node ring")
                    out = subprocess.run(cmd, capture_output=True, text=True).stdout
                    for line in out.replace("\r", "\n").splitlines():
                        if "requests per second" in line:
                            print(line.strip())
    finally:
        for p in procs:
            p.send_signal(signal.SIGKILL)
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
