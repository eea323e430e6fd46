"""`retain` on its timer (SPEC "Abuse and privacy rules in the worker"): a
worker that runs (not --once) trims the stream every min(60 s, retain / 2)
(src/worker/worker.cpp), removing acknowledged entries older than `retain`
that no consumer group still needs. The smallest `retain` the config allows
is 1m, so the first timed trim comes 30 s after the start: this test takes
about 31 s. The --once trim is in test_abuse.py. Real Redis and SQLite."""

import signal
import time

from harness import event_fields, wait_until
from test_worker import Env

HOUR = 3600 * 1000


def xadd(env, entry_id, fields):
    return env.r.cmd("XADD", env.stream, entry_id, *[x for kv in fields.items() for x in kv])


def test_retain_trims_on_its_timer(redis, tmp):
    env = Env("sqlite", redis, tmp, None)
    r = env.r
    code = env.code("alice")
    # Entry ids are times: these six are two hours old (older than retain).
    base = int(time.time() * 1000) - 2 * HOUR
    old = [xadd(env, f"{base + i}-0", event_fields("click", code=code)) for i in range(6)]
    # A second, slow group that has read nothing yet: at the start it
    # needs every entry, so the trim the worker makes at once removes none.
    r.cmd("XGROUP", "CREATE", env.stream, "slow", "0")
    started = time.time()
    w = env.start(config='retain = "1m"\n')
    try:
        assert wait_until(lambda: env.responses("click") == 6 and
                          r.cmd("XPENDING", env.stream, env.group)[0] == 0, timeout=20), "not processed"
        assert r.cmd("XLEN", env.stream) == 6
        # The slow group reads four entries and acknowledges two: the other
        # two stay pending there, the last two it has not read.
        r.cmd("XREADGROUP", "GROUP", "slow", "s1", "COUNT", "4", "STREAMS", env.stream, ">")
        assert r.cmd("XACK", env.stream, "slow", old[0], old[1]) == 2
        # No new entry arrives: only the timer can trim now.
        assert wait_until(lambda: r.cmd("XLEN", env.stream) < 6, timeout=60, step=0.1), \
            "no trim within 60 s"
        trimmed_after = time.time() - started
        ids = [e[0] for e in r.cmd("XRANGE", env.stream, "-", "+")]
        assert ids == old[2:], ids          # acknowledged by both groups: gone; the rest stays
        pending = r.cmd("XPENDING", env.stream, "slow", "-", "+", "10")
        assert [p[0] for p in pending] == old[2:4]
        # On the timer (retain / 2 = 30 s after the start), not on every read.
        assert trimmed_after >= 29.5, trimmed_after
    finally:
        w.send_signal(signal.SIGTERM)
        _, err = w.communicate(timeout=30)
        env.r.close()
    assert w.returncode == 0, err
    assert "retain: trimmed 2 stream entries" in err, err

