"""redis-py (sync and asyncio) against a Bayou server, with the client's
defaults: RESP3 (HELLO 3), CLIENT SETINFO on connect, pipeline() wrapping its
commands in MULTI/EXEC.

Usage: python redis_py.py PORT. Prints one line per check; exits non-zero on
the first failure. Run by crates/bayou-node/tests/clients.rs.
"""

import asyncio
import sys

import redis
import redis.asyncio

from checks import check, fails_naming

PORT = int(sys.argv[1])




def sync_checks():
    r = redis.Redis(host="127.0.0.1", port=PORT)
    check("sync: version", redis.__version__.split(".")[0], "8")
    check("sync: ping", r.ping(), True)
    info = r.client_info()
    check("sync: defaults speak RESP3", str(info["resp"]), "3")
    check("sync: CLIENT SETINFO on connect", info["lib-name"], "redis-py")
    check("sync: CLIENT SETNAME", r.client_setname("py-sync"), True)
    check("sync: CLIENT GETNAME", r.client_getname(), "py-sync")
    check("sync: CLIENT ID", isinstance(r.client_id(), int), True)
    check("sync: SELECT 0", r.select(0), True)
    check("sync: ECHO", r.echo("hi"), b"hi")
    check("sync: INFO server", r.info("server")["redis_mode"], "standalone")
    check("sync: COMMAND COUNT", r.command_count() > 30, True)
    docs = r.execute_command("COMMAND DOCS", "get")
    check("sync: COMMAND DOCS", b"summary" in docs[b"get"], True)
    check("sync: FLUSHDB", r.flushdb(), True)
    check("sync: DBSIZE after FLUSHDB", r.dbsize(), 0)
    check("sync: INFO keyspace", r.info("keyspace")["db0"]["keys"], 0)

    # The default pipeline is a MULTI/EXEC transaction.
    p = r.pipeline()
    p.set("a", "1").incr("n").incrby("n", 4).get("a")
    check("sync: pipeline() with MULTI/EXEC", p.execute(), [True, 1, 5, b"1"])
    p = r.pipeline(transaction=False)
    p.set("b", "2").get("b")
    check("sync: pipeline(transaction=False)", p.execute(), [True, b"2"])

    check("sync: INCR", r.incr("n"), 6)
    check("sync: DECR", r.decr("n"), 5)
    check("sync: DECRBY", r.decrby("n", 2), 3)
    r.set("s", "x")
    fails_naming("sync: INCR on a non-integer", lambda: r.incr("s"), "not an integer")
    check("sync: APPEND", r.append("a", "23"), 3)
    check("sync: GET after APPEND", r.get("a"), b"123")
    check("sync: SETNX on a new key", r.setnx("fresh", "v"), True)
    check("sync: SETNX on an existing key", r.setnx("fresh", "w"), False)
    check("sync: SET NX on an existing key", r.set("fresh", "w", nx=True), None)
    check("sync: SET XX GET", r.set("fresh", "x", xx=True, get=True), b"v")
    check("sync: GETSET", r.getset("fresh", "y"), b"x")
    check("sync: GETDEL", r.getdel("fresh"), b"y")
    check("sync: GETDEL again", r.getdel("fresh"), None)
    check("sync: MSET", r.mset({"m1": "1", "m2": "2"}), True)
    check("sync: MGET", r.mget("m1", "m2", "none"), [b"1", b"2", None])
    check("sync: EXISTS", r.exists("m1", "m2", "none"), 2)
    check("sync: TYPE", (r.type("m1"), r.type("none")), (b"string", b"none"))
    check("sync: KEYS", sorted(r.keys("m*")), [b"m1", b"m2"])
    for i in range(25):
        r.set(f"scan:{i}", i)
    check("sync: SCAN MATCH COUNT", sorted(r.scan_iter(match="scan:*", count=4)), sorted(f"scan:{i}".encode() for i in range(25)))
    cursor, page = r.scan(0, match="scan:*", count=5)
    check("sync: SCAN pages", (cursor != 0, 5 <= len(page) < 25), (True, True))
    fails_naming("sync: SET EX says it is unsupported", lambda: r.set("e", 1, ex=10), "'SET ... EX' is not supported")
    fails_naming("sync: EXPIRE says it is unsupported", lambda: r.expire("e", 10), "'EXPIRE' is not supported")
    fails_naming("sync: LPUSH says it is unsupported", lambda: r.lpush("l", 1), "'LPUSH' is not supported")
    check("sync: config_get", r.config_get("appendonly"), {"appendonly": "yes"})
    r.close()


async def async_checks():
    r = redis.asyncio.Redis(host="127.0.0.1", port=PORT)
    check("asyncio: ping", await r.ping(), True)
    check("asyncio: defaults speak RESP3", str((await r.client_info())["resp"]), "3")
    await r.client_setname("py-async")
    check("asyncio: CLIENT GETNAME", await r.client_getname(), "py-async")
    async with r.pipeline() as p:
        p.set("x", "1").incr("an").get("x")
        check("asyncio: pipeline() with MULTI/EXEC", await p.execute(), [True, 1, b"1"])
    check("asyncio: INCRBY", await r.incrby("an", 10), 11)
    check("asyncio: KEYS", sorted(await r.keys("x")), [b"x"])
    check("asyncio: SCAN", sorted([k async for k in r.scan_iter(match="x*")]), [b"x"])
    await r.aclose()


sync_checks()
asyncio.run(async_checks())
print("all redis-py checks passed")
