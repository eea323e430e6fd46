"""referral-worker behind Redis Sentinel (SPEC "The worker and the main
database", `--redis redis-sentinel://...`): a primary, a replica and three
Sentinels from Debian on 127.0.0.1; the primary is killed while the worker
drains, the worker follows the new primary and loses nothing."""

import signal
import subprocess
import uuid

import pytest

from harness import WORKER, MainDb, RedisClient, SentinelSet, ctl, event_fields, wait_until, xadd_args


@pytest.fixture
def sentinels():
    s = SentinelSet().start()
    yield s
    s.close()


def test_worker_url_refusals(tmp):
    db = MainDb("sqlite", tmp)
    ctl(db.url, "migrate", check=True)
    for url, why in (("redis-sentinel://127.0.0.1:1", "names its service"),
                     ("redis-sentinel://127.0.0.1:1#", "names its service"),
                     ("redis-sentinel://127.0.0.1:x#svc", "bad port")):
        p = subprocess.run([WORKER, "--redis", url, "--database", db.url, "--once"], capture_output=True,
                           text=True, timeout=30)
        assert p.returncode == 2 and why in p.stderr, p.stderr


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_worker_follows_a_failover(sentinels, backend, tmp, request):
    pg = request.getfixturevalue("pg") if backend == "postgresql" else None
    db = MainDb(backend, tmp, pg)
    ctl(db.url, "migrate", check=True)
    code = ctl(db.url, "code", "create", "--user", "alice", check=True)[1].strip()
    stream = "referral:events:" + uuid.uuid4().hex[:8]
    ids = []

    def send(n):
        c = RedisClient(sentinels.primary_port())
        try:
            for _ in range(n):
                e = event_fields("click", code=code)
                ids.append(e["id"])
                c.cmd(*xadd_args(stream, e))
            c.cmd("WAIT", "1", "5000")  # on the replica too, before the primary dies
        finally:
            c.close()

    send(50)
    w = subprocess.Popen([WORKER, "--redis", sentinels.url, "--stream", stream, "--database", db.url,
                          "--consumer", "w1"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: db.count("SELECT count(*) FROM referral_response") == 50, timeout=30)
        sentinels.fail_over()
        send(50)  # written to the new primary
        wait_until(lambda: db.count("SELECT count(*) FROM referral_response") == 100, timeout=60)
    finally:
        w.send_signal(signal.SIGTERM)
        _, err = w.communicate(timeout=30)
    assert w.returncode == 0, err
    stored = {r[0] for r in db.query("SELECT event_id FROM referral_response")}
    assert stored == set(ids)
    assert err.count("connected to Redis") >= 2, err   # it reconnected, to the new primary
