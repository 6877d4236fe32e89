"""redis-py (sync and asyncio) over TLS, trusting the test CA.

Usage: python tls_py.py PORT CA_PEM. Prints one line per check; exits
non-zero on the first failure. Run by crates/bayou-node/tests/tls.rs and
crates/chord-node/tests/tls.rs; works with either server (only PING, SET,
GET and CONFIG GET).
"""

import asyncio
import sys

import redis
import redis.asyncio

from checks import check

PORT = int(sys.argv[1])
CA = sys.argv[2]


def sync_checks():
    r = redis.Redis(host="127.0.0.1", port=PORT, ssl=True, ssl_ca_certs=CA)
    check("tls sync: ping", r.ping(), True)
    check("tls sync: SET", r.set("py:tls", "secret"), True)
    check("tls sync: GET", r.get("py:tls"), b"secret")
    check(
        "tls sync: CONFIG GET tls-ca-cert-file",
        r.config_get("tls-ca-cert-file"),
        {"tls-ca-cert-file": CA},
    )
    r.close()


async def async_checks():
    r = redis.asyncio.Redis(host="127.0.0.1", port=PORT, ssl=True, ssl_ca_certs=CA)
    check("tls asyncio: ping", await r.ping(), True)
    check("tls asyncio: GET", await r.get("py:tls"), b"secret")
    await r.aclose()


def plain_text_is_refused():
    r = redis.Redis(host="127.0.0.1", port=PORT, socket_timeout=5)
    try:
        r.ping()
    except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError) as e:
        print(f"ok plain text to the TLS port fails ({type(e).__name__})")
        return
    print("FAIL plain text to the TLS port: PING answered")
    sys.exit(1)


sync_checks()
asyncio.run(async_checks())
plain_text_is_refused()
print("redis-py over TLS: all checks passed")
