"""Abuse and privacy in the worker (SPEC "Abuse and privacy rules in the
worker"): click dedup, self-referral by device, same-IP review, expired and
revoked codes, retention, erasure and stream retention; against real Redis,
SQLite and PostgreSQL."""

import os
import signal
import subprocess
import time
import uuid

import pytest

from harness import WORKER, RedisServer, ctl, event_fields, wait_until
from test_worker import Env, counts

HOUR = 3600 * 1000
DAY = 24 * HOUR


@pytest.fixture(scope="module")
def redis():
    r = RedisServer().start()
    yield r
    r.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def env(request, redis, tmp):
    pg = request.getfixturevalue("pg") if request.param == "postgresql" else None
    e = Env(request.param, redis, tmp, pg)
    yield e
    e.r.close()


def stats_counted(env):
    rc, j, err = ctl(env.db.url, "stats", json_out=True)
    assert rc == 0, err
    return j["counted"]


SIGNUP_RULE = """
[[reward]]
name = "signup-credit"
action = "signup"
referrer_plan = "any"
referrer = { kind = "credit", amount = 500, currency = "usd" }
referee = { kind = "credit", amount = 500, currency = "usd" }
"""


# -------------------------------------------------------------- click dedup

def test_click_dedup_at_the_window_edges(env):
    code, other = env.code("alice"), env.code("alice", label="mail")
    v, w = uuid.uuid4().hex, uuid.uuid4().hex
    t0 = int(time.time() * 1000) - 3 * HOUR
    env.click(code, visitor=v, ts=t0)
    env.drain(config='click_dedup = "1h"\n')          # the first, stored: the next look in the table
    env.click(code, visitor=v, ts=t0 + HOUR - 1)       # 1 ms short of an hour: not stored
    env.click(code, visitor=w, ts=t0 + 1)              # another visitor: stored
    env.click(other, visitor=v, ts=t0 + 2)             # another code: stored
    env.click(code, visitor=v, ts=t0 + HOUR)           # exactly an hour: stored
    env.click(code, visitor=v, ts=t0 + HOUR + 10)      # 10 ms after that one, same batch: not stored
    log = env.drain(config='click_dedup = "1h"\n')
    assert env.responses("click") == 4
    assert counts(log)["click_dedup"] == 2
    assert stats_counted(env)["click_dedup"] == 2
    # Off by default: the same clicks again (new ids) are all stored.
    env.click(code, visitor=v, ts=t0 + HOUR + 20)
    env.drain()
    assert env.responses("click") == 5


# ------------------------------------------------------ self-referral by device

def test_self_referral_by_the_same_visitor(env):
    code = env.code("alice")
    device = uuid.uuid4().hex
    # alice follows her own link in a fresh browser and is seen there
    # (any conversion of hers carries that visitor) ...
    env.click(code, visitor=device)
    env.conversion("login", "alice", code=code, visitor=device)
    # ... then a second account signs up in that browser.
    env.conversion("signup", "alice2", code=code, visitor=device)
    # A real friend on another device is linked.
    env.conversion("signup", "bob", code=code, visitor=uuid.uuid4().hex)
    log = env.drain(config=SIGNUP_RULE)
    assert env.referrer_of("alice2") is None and env.referrer_of("bob") == "alice"
    assert counts(log)["self_referral"] == 1
    assert stats_counted(env)["self_referral"] == 1
    assert env.db.count("SELECT count(*) FROM referral_reward WHERE referred_user_id = 'alice2'") == 0
    assert env.db.query(f"SELECT user_id FROM referral_visitor WHERE visitor_id = '{device}' ORDER BY user_id") == \
        [("alice",), ("alice2",)]


# --------------------------------------------------------------- same-IP review

def test_signup_from_the_referrers_address_goes_to_review(env):
    code = env.code("alice")
    env.conversion("login", "alice", ip="198.51.100.9")
    env.conversion("signup", "bob", code=code, ip="198.51.100.9")
    env.conversion("signup", "carol", code=code, ip="192.0.2.44")
    # An address alice used more than 24 h before the signup does not count.
    old = int(time.time() * 1000) - 3 * DAY
    env.conversion("login", "alice", ip="203.0.113.200", ts=old)
    env.conversion("signup", "dave", code=code, ip="203.0.113.200")
    log = env.drain(config="review_same_ip = true\n" + SIGNUP_RULE)
    rows = env.db.query("SELECT referred_user_id, role, status, COALESCE(reason, '') FROM referral_reward"
                        " ORDER BY referred_user_id, role")
    assert rows == [("bob", "referee", "review", "same_ip"), ("bob", "referrer", "review", "same_ip"),
                    ("carol", "referee", "available", ""), ("carol", "referrer", "available", ""),
                    ("dave", "referee", "available", ""), ("dave", "referrer", "available", "")]
    assert env.referrer_of("bob") == "alice"    # linked, but reviewed
    assert counts(log)["same_ip"] == 1 and stats_counted(env)["same_ip"] == 1


# ------------------------------------------------------- expired, revoked codes

def test_expired_and_revoked_codes(env):
    rc, j, err = ctl(env.db.url, "code", "create", "--user", "alice", "--expires", "1h", json_out=True)
    assert rc == 0 and j["expires_at"], err
    expiring = j["code"]
    revoked = env.code("alice", label="ads")
    now = int(time.time() * 1000)
    # Judged at the event's time: before expiry links, after does not.
    env.conversion("signup", "early", code=expiring, ts=now + 10 * 60 * 1000)
    env.click(expiring, ts=now + 2 * HOUR)
    env.conversion("signup", "late", code=expiring, ts=now + 2 * HOUR)
    env.drain()
    assert env.referrer_of("early") == "alice" and env.referrer_of("late") is None
    assert env.responses("click") == 1      # the click is still counted
    rc, out, err = ctl(env.db.url, "code", "revoke", revoked)
    assert rc == 0 and "revoked" in out, err
    rc, _, err = ctl(env.db.url, "code", "revoke", revoked)
    assert rc == 1 and "already revoked" in err
    rc, _, err = ctl(env.db.url, "code", "revoke", "NOSUCHCODE")
    assert rc == 1 and "no referral code NOSUCHCODE" in err
    rc, _, err = ctl(env.db.url, "code", "revoke", "bad code!")
    assert rc == 1 and "bad code" in err
    rc, _, err = ctl(env.db.url, "code", "create", "--user", "x", "--expires", "soon")
    assert rc == 1 and "bad --expires" in err
    env.click(revoked)
    env.conversion("signup", "after", code=revoked)
    env.conversion("signup", "before", code=revoked, ts=now - HOUR)   # happened before the revocation
    log = env.drain()
    assert env.referrer_of("after") is None and env.referrer_of("before") == "alice"
    c = counts(log)
    assert c["code_revoked"] == 2               # the click and the signup
    figures = stats_counted(env)
    assert figures["code_expired"] == 2 and figures["code_revoked"] == 2
    rc, out, _ = ctl(env.db.url, "stats")
    assert "code_expired=2" in out and "code_revoked=2" in out


# ----------------------------------------------------------------- retention

def test_retention_clears_only_what_is_older(env):
    code = env.code("alice")
    old = int(time.time() * 1000) - 3 * DAY
    env.click(code, ts=old, ip="203.0.113.1")
    env.conversion("signup", "bob", code=code, ts=old, first_ts=old, ip="203.0.113.2")
    env.click(code, ip="203.0.113.3")
    env.drain()
    assert env.db.count("SELECT count(*) FROM referral_response WHERE ip IS NOT NULL") == 3
    cfg = os.path.join(env.tmp, "retention.toml")
    with open(cfg, "w") as f:
        f.write('retention = "2d"\n')
    p = subprocess.Popen([WORKER, "--config", cfg, "--redis", env.redis.url, "--stream", env.stream,
                          "--database", env.db.url], stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: env.db.count("SELECT count(*) FROM referral_response WHERE ip IS NOT NULL") == 1,
                   timeout=20)
    finally:
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=30)
    rows = env.db.query("SELECT COALESCE(ip, ''), COALESCE(user_agent, ''), COALESCE(target, ''),"
                        " COALESCE(referer, ''), action FROM referral_response ORDER BY created_at")
    assert rows[0][:4] == ("", "", "", "") and rows[1][:4] == ("", "", "", "")
    assert rows[2][0] == "203.0.113.3" and rows[2][1] and rows[2][2]
    assert env.responses() == 3                  # cleared, not deleted
    assert env.db.count("SELECT count(*) FROM referral_visitor WHERE user_id = 'bob'") == 0   # seen 3 days ago
    assert "retained=" in err


# ---------------------------------------------------------------------- forget

def test_forget_leaves_no_trace_and_keeps_the_accounting(env):
    code = env.code("alice")
    bob_device = uuid.uuid4().hex
    ip, ua, url = "198.51.100.77", "Mozilla/5.0 (BobPhone) forget-me", "/landing?utm=forget-me"
    env.click(code, visitor=bob_device, ip=ip, ua=ua, url=url, referer="https://bob.example/forget-me")
    env.conversion("signup", "bob", code=code, visitor=bob_device, ip=ip, ua=ua, url=url)
    env.conversion("subscribe", "alice", ip="192.0.2.1")
    env.conversion("subscribe", "bob", code=code, visitor=bob_device, ip=ip, ua=ua, url=url, order="in_7",
                   amount="999", currency="usd")
    env.drain()
    rewards_before = env.db.query("SELECT id, user_id, amount, status FROM referral_reward ORDER BY id")
    assert rewards_before
    responses_before = env.responses()
    rc, j, err = ctl(env.db.url, "forget", "--user", "bob", json_out=True)
    assert rc == 0, err
    assert j["user"] == "bob" and j["responses_cleared"] == 3 and j["visitor_ids"] == [bob_device]
    rc, out, _ = ctl(env.db.url, "forget", "--user", "bob")
    assert rc == 0 and "forgot bob" in out
    rc, _, err = ctl(env.db.url, "forget", "--user", "nobody")
    assert rc == 1 and "unknown user nobody" in err
    # No table holds bob's address, user agent, URLs or device any more.
    for needle in (ip, "BobPhone", "forget-me", bob_device):
        assert not dump_contains(env, needle), needle
    # The accounting stays: rewards, responses, the link.
    assert env.db.query("SELECT id, user_id, amount, status FROM referral_reward ORDER BY id") == rewards_before
    assert env.responses() == responses_before and env.referrer_of("bob") == "alice"
    # alice's own data is untouched.
    assert dump_contains(env, "192.0.2.1")


def dump_contains(env, needle):
    """True when any column of any table holds `needle`."""
    if env.backend == "sqlite":
        tables = [r[0] for r in env.db.query("SELECT name FROM sqlite_master WHERE type = 'table'")]
    else:
        tables = [r[0] for r in env.db.query("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
    for t in tables:
        rows = env.db.query(f"SELECT * FROM {t}")
        if any(needle in "\t".join(r) for r in rows):
            return True
    return False


# ---------------------------------------------------------------------- retain

def test_retain_trims_what_no_group_needs(env):
    r = env.r
    now = int(time.time() * 1000)
    code = env.code("alice")
    # Old entries (explicit ids 3 and 2 hours ago), then recent ones.
    old_ids = [f"{now - 3 * HOUR + i}-0" for i in range(5)] + [f"{now - 2 * HOUR + i}-0" for i in range(5)]
    for i, sid in enumerate(old_ids):
        r.cmd(*(["XADD", env.stream, sid] + sum(([k, v] for k, v in event_fields("click", code=code).items()), [])))
    for _ in range(3):
        env.click(code)
    # A slow group read the 2-hour-old entries and acknowledged none of them.
    r.cmd("XGROUP", "CREATE", env.stream, "slow", f"{now - 2 * HOUR - 1}-0")
    r.cmd("XREADGROUP", "GROUP", "slow", "s1", "COUNT", "2", "STREAMS", env.stream, ">")
    log = env.drain(config='retain = "1h"\n')
    assert env.responses("click") == 13
    ids = [e[0] for e in r.cmd("XRANGE", env.stream, "-", "+")]
    # The 3-hour-old entries are gone; the slow group's pending ones and
    # everything after them stay.
    assert ids[0] == old_ids[5] and len(ids) == 8, ids
    pending = r.cmd("XPENDING", env.stream, "slow")
    assert pending[0] == 2
    assert "retain: trimmed 5 stream entries" in log
    # The slow group acknowledges: the 2-hour-old ones may go now.
    r.cmd("XACK", env.stream, "slow", old_ids[5], old_ids[6])
    r.cmd("XREADGROUP", "GROUP", "slow", "s1", "COUNT", "100", "STREAMS", env.stream, ">")
    r.cmd("XACK", env.stream, "slow", *[e for e in ids[2:]])
    env.drain(config='retain = "1h"\n')
    ids = [e[0] for e in r.cmd("XRANGE", env.stream, "-", "+")]
    assert len(ids) == 3        # the recent ones (younger than retain) stay
