"""What every client script of the compatibility matrix checks with: one
line per check, and exit non-zero on the first failure."""

import sys

import redis


def check(name, got, want):
    if got != want:
        print(f"FAIL {name}: got {got!r}, want {want!r}")
        sys.exit(1)
    print(f"ok {name}")


def fails_naming(name, f, text):
    try:
        f()
    except redis.ResponseError as e:
        check(name, text in str(e), True)
        return
    print(f"FAIL {name}: no error")
    sys.exit(1)
