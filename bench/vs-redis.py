#!/usr/bin/env python3
"""Bayou and Chord against redis-server at the same durability, in one run.

The peer is redis-server with `appendonly yes` and `appendfsync always`:
like a Bayou replica or a Chord node, it fsyncs every write before it
answers. Four servers are started on loopback:

  redis        redis-server, appendonly yes, appendfsync always
  bayou lone   one Bayou primary (`bayou serve`, anti-entropy off)
  bayou A      replica A of a 3-replica cluster (P, A, B), anti-entropy
               every 100 ms: the configuration users run
  chord        one node of an 8-node Chord ring, 3 copies of every key
               (`chord cluster`); with random keys, 7 in 8 are owned by
               another node, so a read is one more loopback hop and a
               write waits for three durable copies

For each test (SET, GET, SET -P 16, GET -P 16) redis-benchmark runs
against each server in turn, REPEAT times, alternating the servers; the
table shows the median requests/s, the median p50 and p99 latencies (ms)
and the ratio to redis. Then anti-entropy between two real processes: P
takes --ae-writes writes while A is offline, and one BAYOU.SYNC brings A
up to date (a full-state transfer when P has truncated past A).

With `security` in --only (the default), a second table shows what TLS
and authentication cost: redis-server and a lone Bayou primary once with
TLS (certificates from `bayou tls-certs`; redis-benchmark --tls) and once
with a users file (redis-benchmark --user bench -a …; every command is
then checked against the user's permissions), each against its plain
self, and the Bayou primary signing every write it accepts
(--signing-key).

Usage: bench/vs-redis.py [--requests N] [--clients C] [--repeat R]
                         [--ae-writes W] [--only redis,bayou-lone,...]
Needs redis-server, redis-benchmark and redis-cli (Debian: redis-server,
redis-tools). BAYOU_BIN and CHORD_BIN may point to built binaries;
otherwise both are built in release mode.
"""

import argparse
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = [("SET", 1), ("GET", 1), ("SET", 16), ("GET", 16)]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_run(n):
    """n consecutive free ports (for `chord cluster --base-port`)."""
    for _ in range(200):
        base = free_port()
        ok = True
        for p in range(base, base + n):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    sys.exit("no run of free ports")


def binary(env_var, package, name):
    path = os.environ.get(env_var)
    if path:
        return path
    subprocess.run(["cargo", "build", "--release", "-q", "-p", package], cwd=ROOT, check=True)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    return os.path.join(target, "release", name)


def wait_ping(port, timeout=30.0, extra=()):
    """Waits until the server answers PING; `extra` are the TLS or user
    flags redis-cli shares with redis-benchmark."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = subprocess.run(["redis-cli", "-p", str(port), *extra, "--no-auth-warning", "PING"],
                           capture_output=True, text=True)
        if r.stdout.strip() == "PONG":
            return
        time.sleep(0.1)
    sys.exit(f"server on port {port} did not answer PING")


def status(port, field):
    out = subprocess.run(
        ["redis-cli", "-p", str(port), "BAYOU.STATUS"], capture_output=True, text=True
    ).stdout.split("\n")
    for i, line in enumerate(out[:-1]):
        if line == field:
            return out[i + 1]
    return None


def bench(port, test, pipe, n, clients, extra=()):
    """(requests/s, p50 ms, p99 ms) of one redis-benchmark run; `extra`
    are more redis-benchmark flags (TLS, a user and password)."""
    r = subprocess.run(
        ["redis-benchmark", "-p", str(port), "-t", test.lower(), "-n", str(n),
         "-c", str(clients), "-r", "100000", "-P", str(pipe), "--csv", *extra],
        capture_output=True, text=True,
    )
    for line in r.stdout.splitlines():
        cols = [c.strip('"') for c in line.split(",")]
        if cols and cols[0] == test:
            # test, rps, avg, min, p50, p95, p99, max
            return float(cols[1]), float(cols[4]), float(cols[6])
    sys.exit(f"redis-benchmark on port {port} printed no {test} line:\n{r.stdout}\n{r.stderr}")


class Servers:
    def __init__(self, work):
        self.work = work
        self.procs = []

    def spawn(self, name, argv, env=None):
        log = open(os.path.join(self.work, name + ".log"), "w")
        e = dict(os.environ, RUST_LOG="warn")
        e.update(env or {})
        p = subprocess.Popen(argv, stdout=log, stderr=log, env=e, start_new_session=True)
        self.procs.append(p)
        return p

    def stop(self):
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=100000, help="requests per redis-benchmark run")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=5, help="runs per test and server (median shown)")
    ap.add_argument("--ae-writes", type=int, default=1000000, help="writes A lacks (0: skip)")
    ap.add_argument("--only", default="redis,bayou-lone,bayou-A,chord,security",
                    help="servers to run; 'security' adds redis and a Bayou primary with TLS and "
                         "with a users file (AUTH), each against its plain self")
    args = ap.parse_args()
    for tool in ("redis-server", "redis-benchmark", "redis-cli"):
        if not shutil.which(tool):
            sys.exit(f"missing {tool} (apt-get install redis-server redis-tools)")
    only = args.only.split(",")
    if "security" in only:
        only += [o for o in ("redis", "bayou-lone") if o not in only]
    bayou = (binary("BAYOU_BIN", "bayou-cli", "bayou")
             if any(o.startswith("bayou") or o == "security" for o in only) or args.ae_writes else None)
    chord = binary("CHORD_BIN", "chord-cli", "chord") if "chord" in only else None

    work = tempfile.mkdtemp(prefix="vs-redis-")
    servers = Servers(work)
    targets = []  # (label, port, extra redis-benchmark flags)
    try:
        if "redis" in only:
            port = free_port()
            os.makedirs(os.path.join(work, "redis"))
            servers.spawn("redis", ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                    "--dir", os.path.join(work, "redis"), "--appendonly", "yes",
                                    "--appendfsync", "always", "--save", "", "--daemonize", "no"])
            targets.append(("redis", port, ()))
        if "bayou-lone" in only:
            port = free_port()
            servers.spawn("bayou-lone", [bayou, "serve", "--id", "P", "--primary", "P",
                                         "--listen", f"127.0.0.1:{port}",
                                         "--data-dir", os.path.join(work, "lone"),
                                         "--sync-interval-ms", "0"])
            targets.append(("bayou lone", port, ()))
        if "bayou-A" in only:
            ports = {r: free_port() for r in "PAB"}
            for r in "PAB":
                peers = []
                for q in "PAB":
                    if q != r:
                        peers += ["--peer", f"{q}=127.0.0.1:{ports[q]}"]
                servers.spawn(f"bayou-{r}", [bayou, "serve", "--id", r, "--primary", "P",
                                             "--listen", f"127.0.0.1:{ports[r]}",
                                             "--data-dir", os.path.join(work, "cluster", r),
                                             "--sync-interval-ms", "100", *peers])
            targets.append(("bayou A", ports["A"], ()))
        if "chord" in only:
            base = free_run(8)
            servers.spawn("chord", [chord, "cluster", "--nodes", "8", "--base-port", str(base),
                                    "--data-dir", os.path.join(work, "chord"), "--replicas", "3"])
            targets.append(("chord", base + 3, ()))
        if "security" in only:
            targets += security_servers(bayou, work, servers)
        for _, port, extra in targets:
            wait_ping(port, extra=extra)
        if "chord" in only:
            time.sleep(3)  # let the ring settle its successor lists

        cpu = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as f:
                cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
        except (OSError, StopIteration):
            pass
        redis_version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2]
        print(f"machine: {os.cpu_count()} cores, {cpu}; {redis_version} appendonly yes appendfsync always")
        print(f"redis-benchmark -n {args.requests} -c {args.clients} -r 100000, median of {args.repeat} "
              f"alternating runs; rps = requests/s, p50/p99 in ms, ratio = rps / redis rps")
        results = {}
        for test, pipe in TESTS:
            runs = {label: [] for label, _, _ in targets}
            for _ in range(args.repeat):
                for label, port, extra in targets:
                    runs[label].append(bench(port, test, pipe, args.requests, args.clients, extra))
            for label, rs in runs.items():
                results[(test, pipe, label)] = (
                    statistics.median(r[0] for r in rs),
                    statistics.median(r[1] for r in rs),
                    statistics.median(r[2] for r in rs),
                )
        main_labels = [label for label, _, _ in targets if label not in SECURITY_LABELS]
        table(results, [(label, "redis") for label in main_labels])
        if "security" in only:
            print("security: each server against its plain self (ratio = rps / plain rps)")
            table(results, [("redis", None), ("redis TLS", "redis"), ("redis AUTH", "redis"),
                            ("bayou lone", None), ("bayou TLS", "bayou lone"),
                            ("bayou AUTH", "bayou lone"), ("bayou signed", "bayou lone")])
        sys.stdout.flush()
        if args.ae_writes:
            anti_entropy(bayou, work, servers, args.ae_writes)
    finally:
        servers.stop()
        shutil.rmtree(work, ignore_errors=True)


SECURITY_LABELS = ("redis TLS", "redis AUTH", "bayou TLS", "bayou AUTH", "bayou signed")

# The benchmark user's password and its SHA-256, as both users files hold it.
BENCH_PASSWORD = "bench-password"


def table(results, columns):
    """Prints rps, ratio to the column named beside it, p50 and p99 for each
    test; `columns` are (label, label of the reference or None)."""
    print(f"{'test':<10}" + "".join(f"{label:>30}" for label, _ in columns))
    print(f"{'':<10}" + "".join(f"{'rps  ratio   p50   p99':>30}" for _ in columns))
    for test, pipe in TESTS:
        row = f"{test + ' -P ' + str(pipe):<10}"
        for label, ref in columns:
            rps, p50, p99 = results[(test, pipe, label)]
            base = results.get((test, pipe, ref)) if ref else None
            ratio = f"{rps / base[0]:.2f}x" if base else "-"
            row += f"{rps:>12.0f} {ratio:>6} {p50:>5.2f} {p99:>5.2f}"
        print(row)


def security_servers(bayou, work, servers):
    """redis-server and a lone Bayou primary, each once with TLS (certificates
    from `bayou tls-certs`) and once with a users file whose one user the
    benchmark authenticates as, and the Bayou primary once signing every
    write (`--signing-key`): (label, port, redis-benchmark flags)."""
    import hashlib
    certs = os.path.join(work, "certs")
    subprocess.run([bayou, "tls-certs", "--out", certs], capture_output=True, check=True)
    pem = lambda name: os.path.join(certs, name)
    tls_flags = ("--tls", "--cacert", pem("ca.pem"))
    auth_flags = ("--user", "bench", "-a", BENCH_PASSWORD)
    digest = hashlib.sha256(BENCH_PASSWORD.encode()).hexdigest()
    users = os.path.join(work, "users.acl")
    with open(users, "w") as f:
        f.write(f"user bench on #{digest} ~* +@all\n")
    out = []
    port = free_port()
    os.makedirs(os.path.join(work, "redis-tls"))
    servers.spawn("redis-tls", ["redis-server", "--port", "0", "--tls-port", str(port),
                                "--tls-cert-file", pem("server.pem"), "--tls-key-file", pem("server-key.pem"),
                                "--tls-ca-cert-file", pem("ca.pem"), "--tls-auth-clients", "no",
                                "--bind", "127.0.0.1", "--dir", os.path.join(work, "redis-tls"),
                                "--appendonly", "yes", "--appendfsync", "always", "--save", "",
                                "--daemonize", "no"])
    out.append(("redis TLS", port, tls_flags))
    port = free_port()
    os.makedirs(os.path.join(work, "redis-auth"))
    servers.spawn("redis-auth", ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                 "--dir", os.path.join(work, "redis-auth"), "--appendonly", "yes",
                                 "--appendfsync", "always", "--save", "", "--daemonize", "no",
                                 "--aclfile", users])
    out.append(("redis AUTH", port, auth_flags))
    port = free_port()
    servers.spawn("bayou-tls", [bayou, "serve", "--id", "P", "--primary", "P",
                                "--listen", f"127.0.0.1:{port}", "--data-dir", os.path.join(work, "tls"),
                                "--sync-interval-ms", "0", "--tls-cert", pem("server.pem"),
                                "--tls-key", pem("server-key.pem"), "--tls-ca", pem("ca.pem")])
    out.append(("bayou TLS", port, tls_flags))
    port = free_port()
    servers.spawn("bayou-auth", [bayou, "serve", "--id", "P", "--primary", "P",
                                 "--listen", f"127.0.0.1:{port}", "--data-dir", os.path.join(work, "auth"),
                                 "--sync-interval-ms", "0", "--acl-file", users])
    out.append(("bayou AUTH", port, auth_flags))
    port = free_port()
    servers.spawn("bayou-signed", [bayou, "serve", "--id", "P", "--primary", "P",
                                   "--listen", f"127.0.0.1:{port}", "--data-dir", os.path.join(work, "signed"),
                                   "--sync-interval-ms", "0", "--signing-key", os.path.join(work, "p.pem")])
    out.append(("bayou signed", port, ()))
    return out


def anti_entropy(bayou, work, servers, writes):
    """P takes `writes` writes while A is offline; one BAYOU.SYNC at A."""
    pp, pa = free_port(), free_port()
    for r, port, q, qport in (("P", pp, "A", pa), ("A", pa, "P", pp)):
        servers.spawn(f"ae-{r}", [bayou, "serve", "--id", r, "--primary", "P",
                                  "--listen", f"127.0.0.1:{port}", "--peer", f"{q}=127.0.0.1:{qport}",
                                  "--data-dir", os.path.join(work, "ae", r), "--sync-interval-ms", "0"])
    wait_ping(pp)
    wait_ping(pa)
    # Keys are "key:" + 12 digits (16 bytes) with -r; values 16 bytes.
    subprocess.run(["redis-benchmark", "-p", str(pp), "-t", "set", "-n", str(writes), "-r", "1000000000",
                    "-d", "16", "-P", "16", "-q"], capture_output=True, check=True)
    csn = int(status(pp, "csn"))
    osn = int(status(pp, "osn"))
    before = int(status(pp, "peer_bytes_sent")) + int(status(pa, "peer_bytes_sent"))
    t0 = time.time()
    subprocess.run(["redis-cli", "-p", str(pa), "BAYOU.SYNC", "P"], capture_output=True, check=True)
    took = time.time() - t0
    acsn = int(status(pa, "csn"))
    after = int(status(pp, "peer_bytes_sent")) + int(status(pa, "peer_bytes_sent"))
    if acsn != csn:
        sys.exit(f"anti-entropy: A holds CSN {acsn} after the session, P {csn}")
    keys = int(status(pa, "keys"))
    sent = after - before
    how = "full-state transfer" if osn > 0 else "log"
    print(f"anti-entropy over TCP: {csn} missing writes ({how}: P had discarded {osn}; {keys} keys) "
          f"in {took:.2f} s = {csn / took:.0f} writes/s, durable at A")
    print(f"  peer bytes: {sent} = {sent / csn:.1f} per write; the writes themselves: 32 bytes "
          f"(16-byte key, 16-byte value) = ratio {sent / csn / 32:.2f}")


if __name__ == "__main__":
    main()
