"""Session guarantees from Python with redis-py: a session that moves
between replicas (docs/sessions.md).

    bayou cluster --replicas 3          # in another terminal
    pip install redis
    python3 examples/python/session.py 7000 7001 7002

Each command is sent with BAYOU.SESSION TOKEN in one pipeline, so the
token always reflects what succeeded; on NOTYET or a connection error the
session moves to the next replica and continues there with
BAYOU.SESSION USE.
"""

import os
import sys

import redis


class Session:
    def __init__(self, ports, guarantees=("RYW", "MR", "WFR", "MW"), wait_ms=300):
        self.ports = list(ports)
        self.current = 0
        self.wait_ms = wait_ms
        self.conn = None
        self.token = None
        # The first replica that answers makes the token.
        for _ in self.ports:
            try:
                self.token = self._connect(open_with=guarantees)
                return
            except redis.ConnectionError:
                self._move()
        raise RuntimeError("no replica reachable")

    def _connect(self, open_with=None):
        self.conn = redis.Redis(port=self.ports[self.current], decode_responses=True,
                                socket_timeout=5)
        if open_with is not None:
            token = self.conn.execute_command("BAYOU.SESSION", "OPEN", *open_with)
        else:
            self.conn.execute_command("BAYOU.SESSION", "USE", self.token)
            token = self.token
        self.conn.execute_command("BAYOU.SESSION", "WAIT", self.wait_ms)
        return token

    def _move(self):
        self.conn = None
        self.current = (self.current + 1) % len(self.ports)

    def command(self, *args, rounds=3):
        errors = []
        for _ in range(rounds * len(self.ports)):
            try:
                if self.conn is None:
                    self._connect()
                pipe = self.conn.pipeline(transaction=False)
                pipe.execute_command(*args)
                pipe.execute_command("BAYOU.SESSION", "TOKEN")
                reply, token = pipe.execute(raise_on_error=False)
                self.token = token
                if isinstance(reply, redis.ResponseError):
                    if str(reply).startswith("NOTYET"):
                        errors.append(f"{self.ports[self.current]}: {reply}")
                        self._move()
                        continue
                    raise reply
                return reply
            except redis.ConnectionError as e:
                errors.append(f"{self.ports[self.current]}: {e}")
                self._move()
        raise RuntimeError("no replica could serve " + repr(args) + ": " + "; ".join(errors))


def main():
    ports = [int(p) for p in sys.argv[1:]] or [7000, 7001, 7002]
    s = Session(ports)
    key = f"todo:{os.getpid()}"
    for i, item in enumerate(["milk", "bread", "eggs"]):
        s.current, s.conn = i % len(ports), None  # write at a different replica each time
        s.command("APPEND", key, item + ";")
        print(f"appended {item} at port {ports[s.current]}")
    for i in range(len(ports)):
        s.current, s.conn = i, None
        value = s.command("GET", key)
        print(f"read at port {ports[s.current]}: {value}")
        assert value.startswith("milk;bread;eggs;"), "read your writes"
    print("token:", s.token)


if __name__ == "__main__":
    main()
