"""referral-worker against real Redis, SQLite and PostgreSQL (SPEC "The
worker and the main database"). Every scenario runs on both databases."""

import os
import re
import signal
import subprocess
import tempfile
import time
import uuid

import pytest

from harness import (WORKER, MainDb, RedisServer, ctl, event_fields, wait_until, xadd_args)

DAY_MS = 86400 * 1000


# ------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def redis():
    r = RedisServer().start()
    yield r
    r.close()


class Env:
    """One scenario: a migrated main database, a stream of its own on the
    shared Redis, and helpers to send events and run the worker."""

    def __init__(self, backend, redis, tmp, pg):
        self.backend = backend
        self.redis = redis
        self.r = redis.client()
        self.tmp = tmp
        self.db = MainDb(backend, tmp, pg)
        self.stream = "referral:events:" + uuid.uuid4().hex[:8]
        self.group = "referral-workers"
        ctl(self.db.url, "migrate", check=True)

    # -- events
    def send(self, *events):
        self.r.pipeline([xadd_args(self.stream, e) for e in events])

    def click(self, code, **kw):
        e = event_fields("click", code=code, **kw)
        self.send(e)
        return e

    def conversion(self, action, user, code="", **kw):
        e = event_fields("conversion", code=code, action=action, user=user, **kw)
        self.send(e)
        return e

    # -- the worker
    def args(self, *extra, config=None):
        a = [WORKER, "--redis", self.redis.url, "--stream", self.stream,
             "--database", self.db.url]
        if config is not None:
            path = os.path.join(self.tmp, "worker-%s.toml" % uuid.uuid4().hex[:6])
            with open(path, "w") as f:
                f.write(config)
            a = [WORKER, "--config", path, "--redis", self.redis.url, "--stream", self.stream,
                 "--database", self.db.url]
        return a + list(extra)

    def drain(self, *extra, config=None, expect=0):
        p = subprocess.run(self.args("--once", *extra, config=config), capture_output=True,
                           text=True, timeout=120)
        assert p.returncode == expect, f"worker exited {p.returncode}:\n{p.stderr}"
        return p.stderr

    def start(self, *extra, config=None):
        return subprocess.Popen(self.args(*extra, config=config), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)

    # -- what is in the database
    def code(self, user, label=None):
        args = ["code", "create", "--user", user] + (["--label", label] if label else [])
        return ctl(self.db.url, *args, check=True)[1].strip()

    def responses(self, action=None):
        where = f" WHERE action = '{action}'" if action else ""
        return self.db.count("SELECT count(*) FROM referral_response" + where)

    def rewards(self, user):
        return self.db.query(
            "SELECT referral_type, role, kind, amount, COALESCE(currency, ''), referred_user_id"
            f" FROM referral_reward WHERE user_id = '{user}' ORDER BY id")

    def referrer_of(self, user):
        rows = self.db.query(
            "SELECT r.user_id FROM referral_user u JOIN referral r ON r.id = u.referral_id"
            f" WHERE u.user_id = '{user}'")
        return rows[0][0] if rows else None

    def plan(self, user):
        rows = self.db.query(f"SELECT plan FROM referral_user WHERE user_id = '{user}'")
        return rows[0][0] if rows else None

    def pending(self):
        return self.r.cmd("XPENDING", self.stream, self.group)[0]

    def snapshot(self):
        """Everything the worker writes, without generated ids and times."""
        return {
            "users": self.db.query(
                "SELECT u.user_id, COALESCE(r.code, ''), u.plan FROM referral_user u"
                " LEFT JOIN referral r ON r.id = u.referral_id ORDER BY u.user_id"),
            "codes": self.db.query("SELECT user_id, label FROM referral ORDER BY user_id, label"),
            "responses": self.db.query(
                "SELECT event_id, action, COALESCE(user_id, '') FROM referral_response ORDER BY event_id"),
            "rewards": self.db.query(
                "SELECT referral_type, user_id, role, referred_user_id, kind, amount"
                " FROM referral_reward ORDER BY referral_type, user_id, referred_user_id"),
        }


@pytest.fixture(params=["sqlite", "postgresql"])
def env(request, redis, tmp):
    pg = request.getfixturevalue("pg") if request.param == "postgresql" else None
    e = Env(request.param, redis, tmp, pg)
    yield e
    e.r.close()


def counts(log):
    """The worker's last 'totals:' line as a dict."""
    lines = [l for l in log.splitlines() if "totals:" in l]
    assert lines, "no totals in the worker's log:\n" + log
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", lines[-1])}


def rules(*blocks):
    return "\n".join(blocks)


def rule(name, action, plan, referrer, referee, cap=None):
    def grant(g):
        if g[0] == "credit":
            return f'{{ kind = "credit", amount = {g[1]}, currency = "{g[2]}" }}'
        return f'{{ kind = "trial_days", amount = {g[1]} }}'
    text = (f'[[reward]]\nname = "{name}"\naction = "{action}"\nreferrer_plan = "{plan}"\n'
            f"referrer = {grant(referrer)}\nreferee = {grant(referee)}\n")
    if cap is not None:
        text += f"cap = {cap}\n"
    return text


# ------------------------------------------------------------ scenarios

def test_click_with_known_code_is_stored_unknown_code_counted(env):
    code = env.code("alice")
    e = env.click(code)
    env.click("nobody-owns-this")
    log = env.drain()
    rows = env.db.query("SELECT r.user_id, x.action, x.event_id, x.visitor_id, x.target, x.ip"
                        " FROM referral_response x JOIN referral r ON r.id = x.referral_id")
    assert rows == [("alice", "click", e["id"], e["visitor"], e["url"], e["ip"])]
    c = counts(log)
    assert c["clicks"] == 1 and c["unknown_code"] == 1
    assert env.pending() == 0


def test_free_referrer_signup_gives_trial_days_to_both(env):
    code = env.code("alice")
    env.click(code)
    env.conversion("signup", "bob", code)
    log = env.drain()
    assert env.referrer_of("bob") == "alice"
    assert env.responses("signup") == 1
    # bob got his own 40-character code
    bob_codes = env.db.query("SELECT code FROM referral WHERE user_id = 'bob'")
    assert len(bob_codes) == 1 and re.fullmatch(r"[A-Za-z0-9]{40}", bob_codes[0][0])
    assert env.rewards("alice") == [("free-trial-extension", "referrer", "trial_days", "7", "", "bob")]
    assert env.rewards("bob") == [("free-trial-extension", "referee", "trial_days", "7", "", "bob")]
    assert counts(log)["linked"] == 1
    rc, out, _ = ctl(env.db.url, "rewards", "--user", "alice")
    assert rc == 0 and "7 extra trial days" in out


def test_paid_referrer_and_friend_get_ten_dollars_when_friend_subscribes(env):
    code = env.code("alice")
    env.conversion("subscribe", "alice", amount=999, currency="usd", order="in_a")
    env.conversion("signup", "bob", code)
    env.drain()
    assert env.plan("alice") == "paid"
    assert env.rewards("alice") == []  # the trial rule is for free referrers
    env.conversion("subscribe", "bob", code, amount=999, currency="usd", order="in_b")
    env.drain()
    assert env.plan("bob") == "paid"
    assert env.rewards("alice") == [("give-10-get-10", "referrer", "credit", "1000", "usd", "bob")]
    assert env.rewards("bob") == [("give-10-get-10", "referee", "credit", "1000", "usd", "bob")]
    row = env.db.query("SELECT amount, currency, order_id FROM referral_response WHERE action = 'subscribe'")
    assert row == [("999", "usd", "in_b")]
    rc, out, _ = ctl(env.db.url, "rewards", "--user", "bob")
    assert "$10.00 credit" in out


def test_plan_at_the_moment_of_the_action(env):
    code = env.code("alice")
    for friend in ("f1", "f2"):
        env.conversion("signup", friend, code)
    env.conversion("subscribe", "alice")
    env.conversion("subscribe", "f1")      # alice pays now: credit
    env.conversion("unsubscribe", "alice")
    env.conversion("subscribe", "f2")      # alice is free again: nothing
    env.drain()
    kinds = [(r[0], r[5]) for r in env.rewards("alice")]
    assert kinds == [("free-trial-extension", "f1"), ("free-trial-extension", "f2"),
                     ("give-10-get-10", "f1")]
    assert env.plan("alice") == "free"


def test_an_older_plan_change_applied_later_leaves_the_newer_plan(env):
    """Several workers or a reclaim may apply a user's events out of order:
    the plan is the one of the newest subscribe/unsubscribe."""
    now = int(time.time() * 1000)
    env.conversion("unsubscribe", "carol", ts=now)
    env.drain()
    env.conversion("subscribe", "carol", ts=now - 60000)   # older, applied later
    env.drain()
    assert env.plan("carol") == "free"
    env.conversion("subscribe", "carol", ts=now + 1000)    # newer: applied
    env.drain()
    assert env.plan("carol") == "paid"


def test_cap_per_referrer(env):
    config = rules(rule("capped", "signup", "any", ("credit", 500, "usd"), ("trial_days", 3), cap=2))
    code = env.code("alice")
    other = env.code("zoe")
    for friend in ("f1", "f2", "f3", "f4"):
        env.conversion("signup", friend, code)
    env.conversion("signup", "g1", other)
    log = env.drain(config=config)
    assert [r[5] for r in env.rewards("alice")] == ["f1", "f2"]
    assert env.rewards("alice")[0][:5] == ("capped", "referrer", "credit", "500", "usd")
    assert env.rewards("f1") == [("capped", "referee", "trial_days", "3", "", "f1")]
    assert env.rewards("f3") == [] and env.rewards("f4") == []
    assert len(env.rewards("zoe")) == 1  # the cap is per referrer
    c = counts(log)
    assert c["capped"] == 2 and c["rewards"] == 3 and c["linked"] == 5


def test_self_and_double_referral_credit_nothing(env):
    alice = env.code("alice")
    carol = env.code("carol")
    env.conversion("signup", "alice", alice)   # her own link
    env.conversion("signup", "bob", alice)
    env.conversion("signup", "bob", carol)     # already referred by alice
    log = env.drain()
    assert env.referrer_of("alice") is None
    assert env.referrer_of("bob") == "alice"
    assert len(env.rewards("alice")) == 1
    assert env.rewards("carol") == []
    c = counts(log)
    assert c["self_referral"] == 1 and c["double_referral"] == 1 and c["linked"] == 1


def test_unknown_code_and_out_of_window_signups(env):
    code = env.code("alice")
    now = int(time.time() * 1000)
    env.conversion("signup", "u1", "no-such-code")
    env.conversion("signup", "u2", code, ts=now, first_ts=now - 3 * DAY_MS)   # outside 2d
    env.conversion("signup", "u3", code, ts=now, first_ts=now - 1 * DAY_MS)   # inside
    log = env.drain(config='window = "2d"\n')
    assert env.referrer_of("u1") is None and env.referrer_of("u2") is None
    assert env.referrer_of("u3") == "alice"
    assert [r[5] for r in env.rewards("alice")] == ["u3"]
    # the unreferred users still got their own code
    assert env.db.count("SELECT count(*) FROM referral WHERE user_id IN ('u1', 'u2')") == 2
    c = counts(log)
    assert c["unknown_code"] == 1 and c["out_of_window"] == 1 and c["linked"] == 1


def flow(env, code):
    """A small program: clicks, signups, subscriptions, plan changes."""
    out = [event_fields("click", code=code) for _ in range(5)]
    out.append(event_fields("click", code="unknown-code"))
    for i in range(4):
        out.append(event_fields("conversion", code=code, action="signup", user=f"friend{i}"))
    out.append(event_fields("conversion", action="subscribe", user="alice"))
    out += [event_fields("conversion", code=code, action="subscribe", user=f"friend{i}",
                         amount=999, currency="usd", order=f"in_{i}") for i in range(3)]
    out.append(event_fields("conversion", action="purchase", user="friend0", amount=5))
    out.append(event_fields("conversion", action="unsubscribe", user="friend1"))
    return out


def test_every_event_sent_twice_changes_nothing(env, redis, tmp, request):
    code = env.code("alice")
    events = flow(env, code)
    for e in events:
        env.send(e, dict(e))        # the same id twice in a row
    env.send(*events)               # and the whole flow again, later
    log = env.drain()
    twice = env.snapshot()
    # the same flow sent once, into a fresh database, gives the same result
    pg = request.getfixturevalue("pg") if env.backend == "postgresql" else None
    once = Env(env.backend, redis, tempfile.mkdtemp(prefix="referral-once-"), pg)
    once.db.query(f"INSERT INTO referral (user_id, code, label, created_at) "
                  f"VALUES ('alice', '{code}', '', '2025-01-01 00:00:00')")
    once.send(*events)
    once.drain()
    assert once.snapshot() == twice
    # trial days for the 4 signups while alice was free, then $10 for the 3
    # subscriptions once she paid; both sides each time
    assert len(twice["rewards"]) == 2 * (4 + 3)
    c = counts(log)
    # each event came three times; the click with an unknown code is
    # counted as such every time, every other copy is a duplicate
    assert c["duplicates"] == 2 * (len(events) - 1)
    assert c["unknown_code"] == 3
    # delivered again after the worker ran: still nothing changes
    env.send(*events)
    env.drain()
    assert env.snapshot() == twice


def test_sigkill_mid_drain_then_another_worker_reclaims(env):
    code = env.code("alice")
    # large enough that the kill, one psql poll (up to a few hundred ms on
    # a loaded machine) after the first row, still finds the drain going
    n = 100000
    batch = [event_fields("click", code=code) for _ in range(n)]
    conversions = [event_fields("conversion", code=code, action="signup", user=f"u{i}")
                   for i in range(50)]
    # conversions spread through the stream
    step = n // len(conversions)
    for i in range(0, n, step):
        env.send(*batch[i:i + step])
        env.send(conversions[i // step])
    a = env.start("--batch", "100", "--consumer", "doomed")
    deadline = time.time() + 60
    while time.time() < deadline and env.responses() == 0:
        time.sleep(0.01)
    time.sleep(0.05)
    a.send_signal(signal.SIGKILL)
    a.wait()
    done_by_a = env.responses()
    assert 0 < done_by_a < n + 50, "the first worker was not killed mid-drain"
    pending_a = env.pending()
    log = env.drain("--consumer", "rescuer", "--claim-idle", "0")
    assert env.responses("click") == n
    assert env.responses("signup") == 50
    assert env.db.count("SELECT count(DISTINCT event_id) FROM referral_response") == n + 50
    assert env.db.count("SELECT count(*) FROM referral_reward") == 2 * 32   # capped at 32
    assert env.pending() == 0
    if pending_a:
        assert "reclaimed" in log


def test_malformed_entries_go_to_the_dead_stream(env):
    code = env.code("alice")
    good1 = env.click(code)
    bad = [
        ({k: v for k, v in event_fields("click", code=code).items() if k != "id"}, "missing field id"),
        (event_fields("click", code=code, v="2"), "unsupported schema version"),
        (event_fields("view", code=code), "unknown type"),
        (event_fields("click", code=code, ts="yesterday"), "bad ts"),
        (event_fields("click", code=code, id_="not-an-id"), "bad id"),
        (event_fields("conversion", code=code, action="signup", user="x", amount="1.5"), "bad amount"),
        ({k: v for k, v in event_fields("conversion", action="signup", user="x").items()
          if k != "user"}, "missing field user"),
    ]
    for fields, _ in bad:
        env.send(fields)
    good2 = env.click(code)
    log = env.drain()
    assert env.responses("click") == 2
    stored = {r[0] for r in env.db.query("SELECT event_id FROM referral_response")}
    assert stored == {good1["id"], good2["id"]}
    dead = env.r.stream(env.stream + ":dead")
    assert len(dead) == len(bad)
    for (_, fields), (original, reason) in zip(dead, bad):
        assert fields["reason"].startswith(reason), fields["reason"]
        for k, v in original.items():
            assert fields[k] == v
        assert "entry" in fields
    assert env.pending() == 0
    assert counts(log)["dead"] == len(bad)


def test_sigterm_finishes_and_exits_zero(env):
    code = env.code("alice")
    n = 20000
    env.send(*[event_fields("click", code=code) for _ in range(n)])
    w = env.start("--batch", "10")
    deadline = time.time() + 30
    while time.time() < deadline and env.responses() == 0:
        time.sleep(0.01)
    w.send_signal(signal.SIGTERM)      # mid-drain
    rc = w.wait(timeout=15)
    assert rc == 0, w.stderr.read()
    stored = env.responses()
    assert 0 < stored < n, "the worker was not stopped mid-drain"
    # what was read was applied and acknowledged: nothing pending, and as
    # many rows as entries up to the group's last delivered id
    assert env.pending() == 0
    info = env.r.cmd("XINFO", "GROUPS", env.stream)[0]
    last = dict(zip(info[0::2], info[1::2]))["last-delivered-id"]
    acked = len(env.r.cmd("XRANGE", env.stream, "-", last))
    assert stored == acked


def test_pending_entries_of_a_restarted_consumer_are_read_first(env):
    code = env.code("alice")
    env.send(*[event_fields("click", code=code) for _ in range(10)])
    # a consumer read them and died before applying
    env.r.cmd("XGROUP", "CREATE", env.stream, env.group, "0", "MKSTREAM")
    env.r.cmd("XREADGROUP", "GROUP", env.group, "same-name", "COUNT", "10", "STREAMS", env.stream, ">")
    assert env.pending() == 10
    env.drain("--consumer", "same-name")   # claim-idle 60 s: only its own pending
    assert env.responses() == 10 and env.pending() == 0


@pytest.mark.parametrize("how", ["own pending", "reclaimed"])
def test_pending_entries_trimmed_from_the_stream_are_acked_counted_and_logged(env, how):
    code = env.code("alice")
    events = [event_fields("click", code=code) for _ in range(6)]
    env.send(*events)
    ids = [e[0] for e in env.r.stream(env.stream)]
    # a consumer read them and died before applying; then two were deleted
    consumer = "same-name" if how == "own pending" else "dead-one"
    env.r.cmd("XGROUP", "CREATE", env.stream, env.group, "0", "MKSTREAM")
    env.r.cmd("XREADGROUP", "GROUP", env.group, consumer, "COUNT", "10", "STREAMS", env.stream, ">")
    env.r.cmd("XDEL", env.stream, ids[1], ids[4])
    assert env.pending() == 6
    if how == "own pending":
        log = env.drain("--consumer", "same-name")
    else:
        log = env.drain("--consumer", "rescuer", "--claim-idle", "0")
    assert env.responses() == 4
    assert env.pending() == 0
    assert counts(log)["trimmed"] == 2
    assert re.search(r"WARN.*2 pending entries were trimmed", log, re.I), log


class ReplyLosingProxy:
    """A TCP proxy to Redis that forwards everything but the reply to the
    first `XREADGROUP ... >`: that connection is cut instead, after Redis
    delivered the entries (they are pending under the consumer's name)."""

    def __init__(self, port):
        import socket
        import threading
        self.port_to = port
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.lost = 0
        self.lock = threading.Lock()
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        import socket
        import threading
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            u = socket.create_connection(("127.0.0.1", self.port_to))
            state = {"drop": False}
            threading.Thread(target=self.pump, args=(c, u, state, True), daemon=True).start()
            threading.Thread(target=self.pump, args=(u, c, state, False), daemon=True).start()

    def pump(self, src, dst, state, upstream):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if upstream:
                    with self.lock:
                        if self.lost == 0 and b"XREADGROUP" in data and b"$1\r\n>\r\n" in data:
                            self.lost = 1
                            state["drop"] = True
                elif state["drop"]:
                    break       # the reply is lost with the connection
                dst.sendall(data)
        except OSError:
            pass
        import socket
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def close(self):
        self.lsock.close()


def test_entries_whose_reply_was_lost_are_read_again_after_a_reconnect(env):
    code = env.code("alice")
    env.send(*[event_fields("click", code=code) for _ in range(10)])
    proxy = ReplyLosingProxy(int(env.redis.url.rsplit(":", 1)[1]))
    try:
        args = [a if a != env.redis.url else f"redis://127.0.0.1:{proxy.port}"
                for a in env.args("--once", "--consumer", "unlucky")]
        p = subprocess.run(args, capture_output=True, text=True, timeout=60)
    finally:
        proxy.close()
    assert proxy.lost == 1
    assert p.returncode == 0, p.stderr
    assert env.responses() == 10, p.stderr
    assert env.pending() == 0


def test_worker_refuses_an_old_schema(backend_db):
    db, _ = backend_db
    p = subprocess.run([WORKER, "--once", "--redis", "redis://127.0.0.1:1", "--database", db.url],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode != 0
    assert "referralctl migrate" in p.stderr


def test_worker_refuses_a_schema_marked_older(env):
    env.db.query("DELETE FROM referral_schema_version")
    p = subprocess.run(env.args("--once"), capture_output=True, text=True, timeout=30)
    assert p.returncode != 0
    assert "referralctl migrate" in p.stderr
    assert "version 0" in p.stderr


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_db(request, tmp):
    """A database that was never migrated."""
    pg = request.getfixturevalue("pg") if request.param == "postgresql" else None
    db = MainDb(request.param, tmp, pg)
    if request.param == "sqlite":
        import sqlite3
        sqlite3.connect(db.path).close()    # an empty file
    return db, request.param


@pytest.mark.parametrize("config,key,line", [
    ('batch = 10\nwindow = "30d"\nbatchsize = 3\n', "batchsize", 3),
    ('stream = "s"\n\nbatch = "lots"\n', "batch", 3),
    ('claim_idle = "soon"\n', "claim_idle", 1),
    ('[[reward]]\nname = "x"\naction = "signup"\nreferrer_plan = "gold"\n'
     'referrer = { kind = "trial_days", amount = 1 }\nreferee = { kind = "trial_days", amount = 1 }\n',
     "referrer_plan", 4),
    ('[[reward]]\nname = "x"\naction = "signup"\nreferrer_plan = "any"\n'
     'referrer = { kind = "credit", amount = 1, currency = "usd", extra = 1 }\n'
     'referee = { kind = "trial_days", amount = 1 }\n', "extra", 5),
])
def test_bad_config_is_refused_with_key_and_line(env, config, key, line):
    code = env.code("alice")
    env.click(code)
    p = subprocess.run(env.args("--once", config=config), capture_output=True, text=True, timeout=30)
    assert p.returncode != 0
    assert key in p.stderr and f":{line}:" in p.stderr, p.stderr
    assert env.responses() == 0     # nothing processed
    assert env.r.cmd("EXISTS", env.stream) == 1
    groups = env.r.cmd("XINFO", "GROUPS", env.stream)
    assert groups == []


def test_redis_password_is_never_logged(tmp):
    r = RedisServer(password="s3cr3t-pw").start()
    try:
        db = MainDb("sqlite", tmp)
        ctl(db.url, "migrate", check=True)
        c = r.client()
        code = ctl(db.url, "code", "create", "--user", "alice", check=True)[1].strip()
        c.cmd(*xadd_args("referral:events", event_fields("click", code=code)))
        p = subprocess.run([WORKER, "--once", "--redis", r.url, "--database", db.url, "-v"],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        assert "s3cr3t-pw" not in p.stderr
        assert db.count("SELECT count(*) FROM referral_response") == 1
        # a wrong password: the worker waits and retries, never shows it
        log = os.path.join(tmp, "wrong-pw.log")
        with open(log, "w") as f:
            w = subprocess.Popen([WORKER, "--redis", f"redis://:wrong-pw@127.0.0.1:{r.port}",
                                  "--database", db.url], stderr=f, text=True)

        def err():
            with open(log) as f:
                return f.read()
        assert wait_until(lambda: "retrying" in err(), timeout=15), err()
        assert w.poll() is None
        w.send_signal(signal.SIGTERM)
        assert w.wait(timeout=10) == 0
        assert "wrong-pw" not in err()
    finally:
        r.close()


def test_redis_going_away_makes_the_worker_wait_not_exit(tmp):
    r = RedisServer().start()
    port = r.port
    db = MainDb("sqlite", tmp)
    ctl(db.url, "migrate", check=True)
    code = ctl(db.url, "code", "create", "--user", "alice", check=True)[1].strip()
    w = subprocess.Popen([WORKER, "--redis", r.url, "--database", db.url],
                         stderr=subprocess.PIPE, text=True)
    try:
        c = r.client()
        c.cmd(*xadd_args("referral:events", event_fields("click", code=code)))
        deadline = time.time() + 10
        while time.time() < deadline and db.count("SELECT count(*) FROM referral_response") < 1:
            time.sleep(0.05)
        r.stop()
        time.sleep(1.5)
        assert w.poll() is None, "the worker exited when Redis went away"
        r2 = RedisServer(port=port).start()
        c2 = r2.client()
        c2.cmd(*xadd_args("referral:events", event_fields("click", code=code)))
        deadline = time.time() + 20
        while time.time() < deadline and db.count("SELECT count(*) FROM referral_response") < 2:
            time.sleep(0.1)
        assert db.count("SELECT count(*) FROM referral_response") == 2
        r2.close()
    finally:
        w.send_signal(signal.SIGTERM)
        w.wait(timeout=15)
        r.close()


def test_database_going_away_makes_the_worker_wait_not_exit(redis, tmp, pg):
    db = MainDb("postgresql", tmp, pg)
    ctl(db.url, "migrate", check=True)
    code = ctl(db.url, "code", "create", "--user", "alice", check=True)[1].strip()
    stream = "referral:events:" + uuid.uuid4().hex[:8]
    c = redis.client()
    name = db.url.rsplit("/", 1)[1]
    w = subprocess.Popen([WORKER, "--redis", redis.url, "--stream", stream, "--database", db.url],
                         stderr=subprocess.PIPE, text=True)
    try:
        c.cmd(*xadd_args(stream, event_fields("click", code=code)))
        deadline = time.time() + 10
        while time.time() < deadline and db.count("SELECT count(*) FROM referral_response") < 1:
            time.sleep(0.05)
        # cut the worker's connection and keep the database closed for a while
        pg.query(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
        pg.query(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
        c.cmd(*xadd_args(stream, event_fields("click", code=code)))
        time.sleep(1.5)
        assert w.poll() is None, "the worker exited when the database went away"
        pg.query(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        deadline = time.time() + 30
        while time.time() < deadline and db.count("SELECT count(*) FROM referral_response") < 2:
            time.sleep(0.1)
        assert db.count("SELECT count(*) FROM referral_response") == 2
        # acknowledged after the commit that stored it
        assert wait_until(lambda: c.cmd("XPENDING", stream, "referral-workers")[0] == 0)
    finally:
        w.send_signal(signal.SIGTERM)
        w.wait(timeout=15)


def refuse_poisoned_clicks(env):
    """A rule the application added: the database refuses for good a
    click whose user agent says "poison"."""
    if env.backend == "sqlite":
        env.db.query("CREATE TRIGGER no_poison BEFORE INSERT ON referral_response"
                     " WHEN NEW.user_agent LIKE '%poison%'"
                     " BEGIN SELECT RAISE(ABORT, 'poisoned user agent'); END")
    else:
        env.db.query("ALTER TABLE referral_response ADD CONSTRAINT no_poison"
                     " CHECK (user_agent NOT LIKE '%poison%')")


def test_an_event_the_database_refuses_goes_to_the_dead_stream(env):
    """A permanent database error (here a constraint the application added)
    is not retried forever: that event alone is dead-lettered, the rest of
    its batch is applied."""
    refuse_poisoned_clicks(env)
    code = env.code("alice")
    good = [event_fields("click", code=code) for _ in range(5)]
    bad = event_fields("click", code=code, ua="poison/1.0")
    env.send(*good[:2], bad, *good[2:])
    log = env.drain()
    assert env.responses() == 5
    dead = env.r.stream(env.stream + ":dead")
    assert len(dead) == 1
    assert dead[0][1]["id"] == bad["id"]
    assert dead[0][1]["reason"].startswith("cannot be applied")
    assert env.pending() == 0
    c = counts(log)
    assert c["dead"] == 1
    # the rows inserted before the rollback are not counted twice
    assert c["clicks"] == 5 and c["duplicates"] == 0


def test_a_refused_write_that_was_deferred_dead_letters_its_event_only(env):
    """On PostgreSQL the writes nobody reads (here the device a signup was
    seen with) go out in pipeline mode with the next statement that needs
    an answer, so their error surfaces later in the batch: the batch is
    still rolled back whole, only the event that caused it is
    dead-lettered, and the signups before and after it are applied."""
    if env.backend == "sqlite":
        env.db.query("CREATE TRIGGER no_poison BEFORE INSERT ON referral_visitor"
                     " WHEN NEW.ip = '198.51.100.66'"
                     " BEGIN SELECT RAISE(ABORT, 'poisoned address'); END")
    else:
        env.db.query("ALTER TABLE referral_visitor ADD CONSTRAINT no_poison"
                     " CHECK (ip <> '198.51.100.66')")
    code = env.code("alice")
    signups = [event_fields("conversion", code=code, action="signup", user=f"friend-{i}") for i in range(4)]
    bad = event_fields("conversion", code=code, action="signup", user="friend-bad", ip="198.51.100.66")
    clicks = [event_fields("click", code=code) for _ in range(3)]
    env.send(clicks[0], signups[0], signups[1], bad, clicks[1], signups[2], signups[3], clicks[2])
    log = env.drain()
    assert env.responses() == 3 + 4
    linked = env.db.query("SELECT user_id FROM referral_user WHERE referral_id IS NOT NULL ORDER BY user_id")
    assert [r[0] for r in linked] == [f"friend-{i}" for i in range(4)]
    dead = env.r.stream(env.stream + ":dead")
    assert [d[1]["id"] for d in dead] == [bad["id"]]
    reason = dead[0][1]["reason"]
    assert reason.startswith("cannot be applied") and ("no_poison" if env.backend != "sqlite" else "poisoned") in reason
    assert env.pending() == 0
    c = counts(log)
    assert c["dead"] == 1 and c["linked"] == 4 and c["clicks"] == 3 and c["duplicates"] == 0


def test_a_stop_under_load_leaves_nothing_pending(env):
    """After a full batch the worker asks Redis for the next one before it
    parses this one (Redis builds that reply meanwhile). A stop with such a
    read out still applies what it delivered: nothing stays pending under
    the consumer's name, and every event is applied exactly once."""
    code = env.code("alice")
    total = 10000
    for _ in range(total // 500):
        env.send(*[event_fields("click", code=code) for _ in range(500)])
    # the reader runs ahead of the database: it waits to hand over a batch
    # (the queue holds two) with the next read already out
    w = env.start("--batch", "10")
    try:
        deadline = time.time() + 20
        while time.time() < deadline and env.responses() < 200:
            time.sleep(0.005)
    finally:
        w.send_signal(signal.SIGTERM)
        assert w.wait(timeout=15) == 0
    delivered = env.responses()
    assert 200 <= delivered < total
    assert env.pending() == 0
    env.drain()  # the rest, never read by the first worker
    assert env.responses() == total


def test_click_text_is_stored_exactly(env):
    """Clicks go to PostgreSQL as columns of the whole batch: quotes,
    backslashes, commas, braces, the word NULL and non-ASCII text arrive
    as sent; an empty value is NULL, also for a batch of one click; a
    control character (the columns' separator among them) is a '?'."""
    code = env.code("alice")
    odd = ['Mozilla "5.0" \\ {x,y}', "NULL", "caf\u00e9 \u2603", "a\x1fb", ",", ""]
    clicks = [event_fields("click", code=code, ua=ua, referer=ua) for ua in odd]
    env.send(*clicks)
    env.drain()
    env.send(event_fields("click", code=code, ua="", referer="", host=""))  # a batch of one
    env.drain()
    rows = env.db.query("SELECT event_id, COALESCE(user_agent, '<null>'), COALESCE(referer, '<null>'),"
                        " COALESCE(host, '<null>') FROM referral_response")
    got = {r[0]: r[1:] for r in rows}
    assert len(got) == len(odd) + 1
    for c in clicks:
        want = c["ua"].replace("\x1f", "?") or "<null>"
        assert got[c["id"]][0] == want and got[c["id"]][1] == want, (c["ua"], got[c["id"]])
    empty = [v for k, v in got.items() if k not in {c["id"] for c in clicks}]
    assert empty == [("<null>", "<null>", "<null>")]


def test_many_clicks_in_a_batch_with_duplicates_and_a_refused_one(env):
    """Clicks are written many to a statement (SQLite: 64 rows; PostgreSQL:
    the whole batch): duplicates inside the batch and across batches are
    counted once each, and a click the database refuses in the middle of
    a statement is dead-lettered alone."""
    refuse_poisoned_clicks(env)
    code = env.code("alice")
    first = [event_fields("click", code=code) for _ in range(150)]
    env.send(*first)
    env.drain("--batch", "500")
    again = first[:20]                                  # applied before
    new = [event_fields("click", code=code) for _ in range(180)]
    bad = event_fields("click", code=code, ua="poison/1.0")
    batch = new[:90] + again + [bad] + new[90:] + new[:10]   # 10 repeated inside the batch
    env.send(*batch)
    log = env.drain("--batch", "500")
    assert env.responses() == 150 + 180
    dead = env.r.stream(env.stream + ":dead")
    assert [d[1]["id"] for d in dead] == [bad["id"]]
    c = counts(log)
    assert c["clicks"] == 180 and c["duplicates"] == 30 and c["dead"] == 1
    assert env.pending() == 0


def test_redis_over_a_unix_socket(tmp):
    r = RedisServer(unix=True).start()
    try:
        db = MainDb("sqlite", tmp)
        ctl(db.url, "migrate", check=True)
        code = ctl(db.url, "code", "create", "--user", "alice", check=True)[1].strip()
        c = r.client()
        c.cmd(*xadd_args("referral:events", event_fields("click", code=code)))
        p = subprocess.run([WORKER, "--once", "--redis", "unix:" + r.unix, "--database", db.path],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        assert db.count("SELECT count(*) FROM referral_response") == 1
    finally:
        r.close()


def test_the_example_config_is_accepted_and_flags_override_it(env):
    source = os.environ.get("REFERRAL_SOURCE_DIR",
                            os.path.join(os.path.dirname(__file__), "..", ".."))
    with open(os.path.join(source, "config", "worker.toml")) as f:
        text = f.read()
    code = env.code("alice")
    env.conversion("signup", "bob", code)
    # the file names /var/lib/referral/referral.db and 127.0.0.1:6379; the
    # flags (--redis, --stream, --database) win
    env.drain(config=text)
    assert env.referrer_of("bob") == "alice"
    assert env.rewards("alice")[0][:4] == ("free-trial-extension", "referrer", "trial_days", "7")


def test_a_default_consumer_name_is_removed_on_a_clean_exit(env):
    code = env.code("alice")
    env.click(code)
    env.drain()
    env.drain("--consumer", "kept-name")
    names = [c[1] for c in env.r.cmd("XINFO", "CONSUMERS", env.stream, env.group)]
    assert names == ["kept-name"]


def test_sqlite_checkpoints_with_a_long_reader(redis, tmp):
    """Enough events for the worker's background checkpoint (64k WAL
    frames) while another connection holds a read transaction open: the
    worker neither stalls nor fails, and the reader is not disturbed."""
    import sqlite3
    db = MainDb("sqlite", tmp)
    ctl(db.url, "migrate", check=True)
    code = ctl(db.url, "code", "create", "--user", "alice", check=True)[1].strip()
    stream = "referral:events:" + uuid.uuid4().hex[:8]
    c = redis.client()
    n = 100000
    for i in range(0, n, 5000):
        c.pipeline([xadd_args(stream, event_fields("click", code=code)) for _ in range(5000)])
    reader = sqlite3.connect(db.path, isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("SELECT count(*) FROM referral_response").fetchone()[0] == 0
    t0 = time.time()
    p = subprocess.run([WORKER, "--once", "-v", "--redis", redis.url, "--stream", stream,
                        "--database", db.url], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert time.time() - t0 < 60
    assert "SQLite checkpoint" in p.stderr
    # the reader still sees its snapshot
    assert reader.execute("SELECT count(*) FROM referral_response").fetchone()[0] == 0
    reader.execute("COMMIT")
    reader.close()
    assert db.count("SELECT count(*) FROM referral_response") == n
    assert db.query("PRAGMA integrity_check") == [("ok",)]
