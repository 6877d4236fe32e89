"""redis-py with a username and password against a server started with
--acl-file holding the users of crates/server-kit/tests/support/acl.rs
(app: ~app:* +@read +@write, password app-secret).

Usage: python acl_py.py PORT. Prints one line per check; exits non-zero on
the first failure. Run by the bayou-node and chord-node `acl` tests.
"""

import sys

import redis

from checks import check

PORT = int(sys.argv[1])


def raises(name, f, cls, text):
    try:
        f()
    except cls as e:
        check(name, text in str(e), True)
        return
    except Exception as e:  # noqa: BLE001 - any other error is a failure
        print(f"FAIL {name}: {type(e).__name__}: {e}")
        sys.exit(1)
    print(f"FAIL {name}: no error")
    sys.exit(1)


for proto in (2, 3):
    # RESP2: AUTH app app-secret; RESP3: HELLO 3 AUTH app app-secret.
    r = redis.Redis(
        host="127.0.0.1",
        port=PORT,
        username="app",
        password="app-secret",
        protocol=proto,
    )
    check(f"resp{proto}: ping", r.ping(), True)
    check(f"resp{proto}: ACL WHOAMI", r.execute_command("ACL", "WHOAMI"), b"app")
    check(f"resp{proto}: SET in its prefix", r.set(f"app:py{proto}", "v"), True)
    check(f"resp{proto}: GET in its prefix", r.get(f"app:py{proto}"), b"v")
    raises(
        f"resp{proto}: SET outside its prefix",
        lambda: r.set("py-other", "v"),
        redis.exceptions.NoPermissionError,
        "No permissions to access a key",
    )
    raises(
        f"resp{proto}: CONFIG is not @read or @write",
        lambda: r.config_get("save"),
        redis.exceptions.NoPermissionError,
        "User app has no permissions to run the 'config' command",
    )
    wrong = redis.Redis(
        host="127.0.0.1",
        port=PORT,
        username="app",
        password="wrong",
        protocol=proto,
    )
    raises(
        f"resp{proto}: a wrong password",
        wrong.ping,
        redis.exceptions.AuthenticationError,
        "invalid username-password pair",
    )
    anonymous = redis.Redis(host="127.0.0.1", port=PORT, protocol=proto)
    raises(
        f"resp{proto}: no password",
        anonymous.ping,
        redis.exceptions.AuthenticationError,
        "Authentication required" if proto == 2 else "HELLO must be called",
    )
