"""redis-py (sync and asyncio) against a Chord node, with the client's
defaults: RESP3 (HELLO 3), CLIENT SETINFO on connect, pipeline() wrapping its
commands in MULTI/EXEC (on Chord: run in order, each routed to its key's
owner, not atomic across keys).

Usage: python chord_py.py PORT. Prints one line per check; exits non-zero on
the first failure. Run by crates/chord-node/tests/clients.rs.
"""

import asyncio
import sys

import redis
import redis.asyncio

from checks import check

PORT = int(sys.argv[1])



def sync_checks():
    r = redis.Redis(host="127.0.0.1", port=PORT)
    check("sync: ping", r.ping(), True)
    info = r.client_info()
    check("sync: defaults speak RESP3", str(info["resp"]), "3")
    check("sync: CLIENT SETINFO on connect", info["lib-name"], "redis-py")
    check("sync: CLIENT SETNAME", r.client_setname("chord-py"), True)
    check("sync: CLIENT GETNAME", r.client_getname(), "chord-py")
    check("sync: SELECT 0", r.select(0), True)
    check("sync: SET", r.set("py:a", "1"), True)
    check("sync: GET", r.get("py:a"), b"1")
    check("sync: MSET", r.mset({"py:m1": "1", "py:m2": "2"}), True)
    check("sync: MGET", r.mget("py:m1", "py:m2", "py:none"), [b"1", b"2", None])
    check("sync: EXISTS", r.exists("py:m1", "py:m2", "py:none"), 2)
    p = r.pipeline()
    p.set("py:b", "2").get("py:b").delete("py:b").get("py:b")
    check("sync: pipeline() with MULTI/EXEC", p.execute(), [True, b"2", 1, None])
    check("sync: DEL", r.delete("py:m1", "py:none"), 1)
    check("sync: INFO server", r.info("server")["redis_mode"], "standalone")
    try:
        r.incr("py:a")
    except redis.ResponseError as e:
        check("sync: an unsupported command names itself", "incr" in str(e).lower(), True)
    else:
        check("sync: INCR is refused", False, True)


async def async_checks():
    r = redis.asyncio.Redis(host="127.0.0.1", port=PORT)
    check("asyncio: ping", await r.ping(), True)
    check("asyncio: SET", await r.set("py:x", "y"), True)
    check("asyncio: GET", await r.get("py:x"), b"y")
    async with r.pipeline() as p:
        p.set("py:c", "3").get("py:c")
        check("asyncio: pipeline()", await p.execute(), [True, b"3"])
    await r.aclose()


sync_checks()
asyncio.run(async_checks())
print("redis-py", redis.__version__, "ok against Chord")
