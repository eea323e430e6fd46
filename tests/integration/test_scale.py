"""Several workers into one PostgreSQL (issue "room to grow"): four
referral-workers in one consumer group, two of them killed with SIGKILL
mid-batch; the survivors reclaim what the dead ones held. Exact counts, no
duplicate rewards, nothing pending at the end."""

import signal
import subprocess
import time
import uuid

import pytest

from harness import WORKER, MainDb, RedisServer, ctl, event_fields, wait_until, xadd_args


@pytest.fixture
def redis():
    r = RedisServer().start()
    yield r
    r.close()


def test_four_workers_two_killed_exact_counts(redis, tmp, pg):
    db = MainDb("postgresql", tmp, pg)
    ctl(db.url, "migrate", check=True)
    code = ctl(db.url, "code", "create", "--user", "alice", check=True)[1].strip()
    stream = "referral:events:" + uuid.uuid4().hex[:8]
    clicks, friends = 20000, 300
    c = redis.client()
    cmds = [xadd_args(stream, event_fields("conversion", action="subscribe", user="alice"))]
    for i in range(clicks):
        cmds.append(xadd_args(stream, event_fields("click", code=code)))
    for i in range(friends):
        cmds.append(xadd_args(stream, event_fields("conversion", code=code, action="signup", user=f"f{i}")))
        cmds.append(xadd_args(stream, event_fields("conversion", code=code, action="subscribe", user=f"f{i}",
                                                   order=f"in_{i}", amount="999", currency="usd")))
    for at in range(0, len(cmds), 5000):
        c.pipeline(cmds[at:at + 5000])
    config = tmp + "/scale.toml"
    with open(config, "w") as f:
        f.write('[[reward]]\nname = "give-10-get-10"\naction = "subscribe"\nreferrer_plan = "any"\n'
                'referrer = { kind = "credit", amount = 1000, currency = "usd" }\n'
                'referee = { kind = "credit", amount = 1000, currency = "usd" }\n')

    def start(name):
        return subprocess.Popen([WORKER, "--config", config, "--redis", redis.url, "--stream", stream,
                                 "--database", db.url, "--consumer", name, "--batch", "200",
                                 "--claim-idle", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)

    workers = {n: start(n) for n in ("w1", "w2", "w3", "w4")}
    try:
        wait_until(lambda: db.count("SELECT count(*) FROM referral_response") > 3000, timeout=60)
        for n in ("w1", "w2"):
            workers[n].send_signal(signal.SIGKILL)   # mid-batch: their entries stay pending
            workers[n].communicate()
        expected = clicks + 2 * friends
        assert wait_until(lambda: db.count("SELECT count(*) FROM referral_response") >= expected, timeout=120)
        assert wait_until(lambda: c.cmd("XPENDING", stream, "referral-workers")[0] == 0, timeout=60)
    finally:
        for n in ("w3", "w4"):
            workers[n].send_signal(signal.SIGTERM)
            _, err = workers[n].communicate(timeout=60)
            assert workers[n].returncode == 0, err
    assert db.count("SELECT count(*) FROM referral_response WHERE action = 'click'") == clicks
    assert db.count("SELECT count(*) FROM referral_response WHERE action = 'signup'") == friends
    assert db.count("SELECT count(*) FROM referral_user WHERE referral_id IS NOT NULL") == friends
    assert db.count("SELECT count(*) FROM referral_reward") == 2 * friends
    assert db.count("SELECT count(DISTINCT (referral_type, role, referred_user_id)) FROM referral_reward") == \
        2 * friends
    assert db.count("SELECT COALESCE(sum(amount), 0) FROM referral_reward WHERE user_id = 'alice'") == \
        1000 * friends
    c.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_subscribe_applied_before_its_signup_is_kept_for_it(redis, tmp, pg, backend):
    """What two workers may do to one friend, made deterministic: the
    friend's subscribe is applied before their signup."""
    db = MainDb(backend, tmp, pg if backend == "postgresql" else None)
    ctl(db.url, "migrate", check=True)
    code = ctl(db.url, "code", "create", "--user", "alice", check=True)[1].strip()
    stream = "referral:events:" + uuid.uuid4().hex[:8]
    c = redis.client()
    t = int(time.time() * 1000)
    c.cmd(*xadd_args(stream, event_fields("conversion", action="subscribe", user="alice", ts=t - 10)))
    c.cmd(*xadd_args(stream, event_fields("conversion", code=code, action="subscribe", user="bob", ts=t,
                                          order="in_1", amount="999", currency="usd")))
    run = lambda: subprocess.run([WORKER, "--once", "--redis", redis.url, "--stream", stream, "--database", db.url],
                                 capture_output=True, text=True, timeout=60)
    p = run()
    assert p.returncode == 0 and "early=1" in p.stderr, p.stderr
    assert db.count("SELECT count(*) FROM referral_reward") == 0
    c.cmd(*xadd_args(stream, event_fields("conversion", code=code, action="signup", user="bob", ts=t - 1000)))
    p = run()
    assert p.returncode == 0 and "replayed=1" in p.stderr, p.stderr
    assert db.query("SELECT user_id, role, amount, COALESCE(order_id, '') FROM referral_reward ORDER BY role") == \
        [("bob", "referee", "1000", "in_1"), ("alice", "referrer", "1000", "in_1")]
    assert db.count("SELECT count(*) FROM referral_response WHERE action = 'subscribe'") == 1
    assert db.count("SELECT count(*) FROM referral_early") == 0
    c.close()
