"""Rewards reach people (SPEC "Reward lifecycle", "Delivery to Stripe and to
the application"): referral-worker against real Redis, SQLite and
PostgreSQL, a local Stripe (fake_stripe.py: Stripe's documented semantics,
idempotency and failures included) and a webhook receiver that verifies
signatures on its own, all on 127.0.0.1."""

import json
import os
import re
import signal
import subprocess
import time
import uuid

import pytest

from fake_stripe import FakeStripe, WebhookReceiver, verify, verify_with_stripe_sdk
from harness import WORKER, MainDb, RedisServer, ctl, event_fields, wait_until, xadd_args

API_KEY = "sk_test_" + "k" * 24
SECRET = b"whsec_" + b"s" * 24
HOUR_MS = 3600 * 1000


@pytest.fixture(scope="module")
def redis():
    r = RedisServer().start()
    yield r
    r.close()


@pytest.fixture
def stripe():
    s = FakeStripe(api_key=API_KEY).start()
    yield s
    assert not s.errors, s.errors
    s.close()


@pytest.fixture
def hooks():
    w = WebhookReceiver(SECRET).start()
    yield w
    w.close()


class Stack:
    """A migrated database, a stream of its own, the fake Stripe and a
    webhook receiver; the worker runs in the background (the delivery loop
    does not run under --once)."""

    def __init__(self, backend, redis, tmp, pg, stripe, hooks):
        self.backend, self.redis, self.tmp = backend, redis, tmp
        self.stripe, self.hooks = stripe, hooks
        self.r = redis.client()
        self.db = MainDb(backend, tmp, pg)
        self.stream = "referral:events:" + uuid.uuid4().hex[:8]
        self.procs = []
        ctl(self.db.url, "migrate", check=True)
        self.key_file = self.write("stripe.key", API_KEY + "\n")
        self.secret_file = self.write("webhook.secret", SECRET.decode() + "\n")

    def write(self, name, text):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o600)
        return path

    # The worker's HTTP timeout: long enough that a fake slowed by a loaded
    # machine is not retried (tests count requests); the "slow" fault test
    # sets a short one to go past it.
    def config(self, rules="", stripe=True, webhook=True, max_attempts=20, timeout="10s", extra="",
               api_version=None):
        text = extra + "\n"
        if stripe:
            text += (f'[stripe]\napi_key_file = "{self.key_file}"\napi_base = "{self.stripe.url}"\n'
                     f'max_attempts = {max_attempts}\ntimeout = "{timeout}"\n')
            if api_version:
                text += f'api_version = "{api_version}"\n'
        if webhook:
            text += (f'[[webhook]]\nurl = "{self.hooks.url}/hooks/referral"\n'
                     f'secret_file = "{self.secret_file}"\nmax_attempts = {max_attempts}\n')
        text += rules
        self.config_file = self.write("worker-%s.toml" % uuid.uuid4().hex[:6], text)
        return self.config_file

    def start(self, consumer="w1"):
        p = subprocess.Popen([WORKER, "--config", self.config_file, "--redis", self.redis.url,
                              "--stream", self.stream, "--database", self.db.url,
                              "--consumer", consumer],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.procs.append(p)
        return p

    def stop(self, p):
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
        return err

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
        self.r.close()

    # -- events
    def send(self, action, user, code="", **kw):
        self.r.cmd(*xadd_args(self.stream, event_fields("conversion", code=code, action=action,
                                                          user=user, **kw)))

    def referral(self, customers=True, order="in_1", amount="1000"):
        """alice (paying) refers bob, who subscribes: give-10-get-10."""
        self.code = ctl(self.db.url, "code", "create", "--user", "alice", check=True)[1].strip()
        alice = {"customer": "cus_alice"} if customers else {}
        bob = {"customer": "cus_bob"} if customers else {}
        self.send("subscribe", "alice", **alice)
        self.send("signup", "bob", code=self.code)
        self.send("subscribe", "bob", code=self.code, amount=amount, currency="usd", order=order, **bob)

    # -- what is in the database
    def rewards(self):
        rc, j, err = ctl(self.db.url, "--config", self.config_file, "rewards", "--user", "alice",
                         json_out=True)
        assert rc == 0, err
        mine = j["rewards"]
        rc, j, err = ctl(self.db.url, "rewards", "--user", "bob", json_out=True)
        return {r["user"]: r for r in mine + j["rewards"]}

    def status(self, user):
        rows = self.db.query(f"SELECT status FROM referral_reward WHERE user_id = '{user}'")
        return rows[0][0] if rows else None

    def deliveries(self, state=None):
        args = ["deliveries"] + (["--state", state] if state else [])
        rc, j, err = ctl(self.db.url, *args, json_out=True)
        assert rc == 0, err
        return j["deliveries"]

    def wait_status(self, user, status, timeout=20):
        wait_until(lambda: self.status(user) == status, timeout=timeout)
        assert self.status(user) == status


@pytest.fixture(params=["sqlite", "postgresql"])
def stack(request, redis, tmp, pg, stripe, hooks):
    s = Stack(request.param, redis, tmp, pg, stripe, hooks)
    yield s
    s.close()


@pytest.fixture
def sqlite_stack(redis, tmp, pg, stripe, hooks):
    s = Stack("sqlite", redis, tmp, pg, stripe, hooks)
    yield s
    s.close()


def credits(stripe, cus):
    return [t["amount"] for t in stripe.balance_transactions(cus)]


# ------------------------------------------------- Stripe balance credits

def test_credit_reaches_both_customers_once(stack):
    s = stack
    s.stripe.add_customer("cus_alice")
    s.stripe.add_customer("cus_bob")
    s.config()
    s.referral()
    w = s.start()
    s.wait_status("alice", "paid")
    s.wait_status("bob", "paid")
    assert credits(s.stripe, "cus_alice") == [-1000]
    assert credits(s.stripe, "cus_bob") == [-1000]
    assert s.stripe.balance("cus_alice") == -1000
    rewards = s.rewards()
    alice = rewards["alice"]
    assert alice["status"] == "paid" and alice["external_id"].startswith("cbtxn_") and alice["paid_at"]
    assert alice["order"] == "in_1" and alice["deliver"] == "stripe_balance"
    # Each request: Bearer key, the pinned version, the reward's key, the label.
    posts = [q for q in s.stripe.requests if q.path.endswith("/balance_transactions")]
    assert len(posts) == 2
    assert s.stripe.versions_seen == {"2024-06-20"}
    keys = sorted(q.headers["idempotency-key"] for q in posts)
    assert keys == sorted(f"referral-{r['id']}-credit" for r in rewards.values())
    assert all(q.params["description"] == "$10.00 credit" for q in posts)
    assert {q.params["metadata[reward_id]"] for q in posts} == {str(r["id"]) for r in rewards.values()}
    assert [d["state"] for d in s.deliveries() if d["target"] == "stripe"] == ["done", "done"]
    # reward.created, reward.available and reward.paid for both, signed.
    wait_until(lambda: len([e for e in s.hooks.events if e["type"] == "reward.paid"]) == 2)
    types = sorted(e["type"] for e in s.hooks.events)
    assert types.count("reward.created") == 2 and types.count("reward.available") == 2
    assert "referral.linked" in types and not s.hooks.bad
    s.stop(w)


@pytest.mark.parametrize("fault,opts", [
    ("500", {}),
    ("429", {"retry_after": 1}),
    ("close_after_apply", {}),
    ("slow", {"seconds": 3}),   # past the worker's 2 s timeout: applied, answer lost
])
def test_credit_exactly_once_through_a_fault(sqlite_stack, fault, opts):
    s = sqlite_stack
    s.stripe.add_customer("cus_alice")
    s.stripe.add_customer("cus_bob")
    s.config(webhook=False, timeout="2s")
    s.stripe.fail_next(2, fault, path="/v1/customers/", **opts)
    s.referral()
    w = s.start()
    s.wait_status("alice", "paid", timeout=40)
    s.wait_status("bob", "paid", timeout=40)
    assert not s.stripe.faults_pending()
    assert credits(s.stripe, "cus_alice") == [-1000]
    assert credits(s.stripe, "cus_bob") == [-1000]
    # Retries carried the same key; every attempt was recorded.
    for r in s.rewards().values():
        key = f"referral-{r['id']}-credit"
        assert len([q for q in s.stripe.requests if q.headers.get("idempotency-key") == key]) >= 2
    attempts = sorted(d["attempts"] for d in s.deliveries())
    assert attempts[-1] >= 2 and all(d["state"] == "done" for d in s.deliveries())
    if fault == "429":
        # Retry-After: 1 honoured: the second try came a second or more later.
        tries = [q.time for q in s.stripe.requests if q.path.endswith("/balance_transactions")]
        assert max(b - a for a, b in zip(tries, tries[1:])) >= 0.9
    s.stop(w)


def test_sigkill_mid_delivery_credits_once(stack):
    s = stack
    s.stripe.add_customer("cus_alice")
    s.stripe.add_customer("cus_bob")
    s.config(webhook=False, timeout="10s")
    s.stripe.fail_next(1, "slow", seconds=2, path="/v1/customers/")
    s.referral()
    w = s.start(consumer="killed")
    wait_until(lambda: any(s.stripe.idempotency_state(f"referral-{i}-credit") == "in_progress"
                           for i in range(1, 5)), timeout=20)
    w.kill()  # SIGKILL while Stripe is applying the request
    w.communicate()
    time.sleep(2.5)  # the slow request finishes: applied at Stripe, never recorded here
    w2 = s.start(consumer="killed")  # same name: its leases are released at start
    s.wait_status("alice", "paid", timeout=30)
    s.wait_status("bob", "paid", timeout=30)
    assert credits(s.stripe, "cus_alice") == [-1000]
    assert credits(s.stripe, "cus_bob") == [-1000]
    assert any(q.replayed for q in s.stripe.requests)  # the retry got the first answer
    s.stop(w2)


def test_balance_credit_waits_for_a_customer(sqlite_stack):
    s = sqlite_stack
    s.stripe.add_customer("cus_alice")
    s.stripe.add_customer("cus_late")
    s.config(webhook=False)
    s.code = ctl(s.db.url, "code", "create", "--user", "alice", check=True)[1].strip()
    s.send("subscribe", "alice", customer="cus_alice")
    s.send("signup", "bob", code=s.code)
    s.send("subscribe", "bob", code=s.code, order="in_2")  # no customer for bob
    w = s.start()
    s.wait_status("alice", "paid")
    time.sleep(2)
    assert s.status("bob") == "available"
    waiting = [d for d in s.deliveries("queued")]
    assert len(waiting) == 1 and waiting[0]["attempts"] == 0  # not tried: nothing to credit yet
    assert s.stripe.count("POST", "/v1/customers/cus_late") == 0
    rc, out, err = ctl(s.db.url, "user", "set", "--user", "bob", "--stripe-customer", "cus_late")
    assert rc == 0 and "cus_late" in out, err
    s.wait_status("bob", "paid")
    assert credits(s.stripe, "cus_late") == [-1000]
    # A bad customer id is refused with a clear message.
    rc, _, err = ctl(s.db.url, "user", "set", "--user", "bob", "--stripe-customer", "cus-x/y")
    assert rc == 1 and "bad Stripe customer" in err
    s.stop(w)


# -------------------------------------------------------- promotion codes

PROMO_RULES = """
[[reward]]
name = "give-10-get-10"
action = "subscribe"
referrer_plan = "paid"
referrer = { kind = "credit", amount = 1000, currency = "usd", deliver = "stripe_promotion_code" }
referee = { kind = "credit", amount = 1000, currency = "usd", deliver = "stripe_promotion_code" }
"""


def test_promotion_codes_then_refund_deactivates(stack):
    s = stack
    s.stripe.add_customer("cus_alice")
    s.stripe.add_customer("cus_bob")
    s.config(rules=PROMO_RULES, webhook=False)
    s.referral()
    w = s.start()
    s.wait_status("alice", "paid")
    s.wait_status("bob", "paid")
    promos = s.stripe.promotion_codes
    assert len(promos) == 2 and len(s.stripe.coupons) == 2
    by_customer = {p["customer"]: p for p in promos.values()}
    assert set(by_customer) == {"cus_alice", "cus_bob"}  # restricted to each one's customer
    for p in promos.values():
        assert p["active"] and p["max_redemptions"] == 1
        assert p["coupon"]["amount_off"] == 1000 and p["coupon"]["duration"] == "once"
    rewards = s.rewards()
    assert rewards["alice"]["external_id"] == by_customer["cus_alice"]["id"]
    # The order is refunded: both codes deactivated.
    s.send("refund", "bob", order="in_1")
    s.wait_status("alice", "reversed")
    s.wait_status("bob", "reversed")
    wait_until(lambda: not any(p["active"] for p in s.stripe.promotion_codes.values()), timeout=20)
    assert not any(p["active"] for p in s.stripe.promotion_codes.values())
    s.stop(w)


# ------------------------------------------------------ hold and refunds

HOLD_RULES = """
[[reward]]
name = "give-10-get-10"
action = "subscribe"
referrer_plan = "paid"
referrer = {{ kind = "credit", amount = 1000, currency = "usd" }}
referee = {{ kind = "credit", amount = 1000, currency = "usd" }}
hold = "{hold}"
clawback = "{clawback}"
"""


def test_hold_then_available_while_the_stream_is_idle(stack):
    s = stack
    # the hold counts from the event's time: long enough for the checks of
    # the pending reward below to finish on a loaded machine
    s.config(rules=HOLD_RULES.format(hold="10s", clawback="90d"), stripe=False)
    s.referral()
    w = s.start()
    s.wait_status("alice", "pending")
    r = s.rewards()["alice"]
    assert r["status"] == "pending" and r["available_at"] is None and r["deliver"] == "app"
    rc, _, err = ctl(s.db.url, "redeem", str(r["id"]))
    assert rc == 1 and "pending until" in err   # only an available reward can be redeemed
    s.wait_status("alice", "available", timeout=30)
    s.wait_status("bob", "available", timeout=30)
    assert s.rewards()["alice"]["available_at"]
    wait_until(lambda: len([e for e in s.hooks.events if e["type"] == "reward.available"]) == 2)
    avail = [e for e in s.hooks.events if e["type"] == "reward.available"]
    assert {e["data"]["object"]["user"] for e in avail} == {"alice", "bob"}
    assert all(e["data"]["object"]["status"] == "available" for e in avail)
    # Redeemed through referralctl (with the config: reward.redeemed is sent).
    rc, out, err = ctl(s.db.url, "--config", s.config_file, "redeem", str(r["id"]))
    assert rc == 0, err
    wait_until(lambda: any(e["type"] == "reward.redeemed" for e in s.hooks.events))
    assert s.status("alice") == "redeemed"
    s.stop(w)


def test_refund_before_payment_reverses_both_sides(stack):
    s = stack
    s.config(rules=HOLD_RULES.format(hold="1h", clawback="90d"))
    s.stripe.add_customer("cus_alice")
    s.stripe.add_customer("cus_bob")
    s.referral()
    w = s.start()
    s.wait_status("bob", "pending")
    s.send("refund", "bob", order="in_unknown")   # unknown order: nothing changes, counted
    s.send("chargeback", "bob", order="in_1")
    s.wait_status("alice", "reversed")
    s.wait_status("bob", "reversed")
    assert s.rewards()["alice"]["reversed_at"]
    assert s.stripe.count("POST") == 0    # nothing was paid: nothing to take back
    wait_until(lambda: len([e for e in s.hooks.events if e["type"] == "reward.reversed"]) == 2)
    err = s.stop(w)
    totals = err.strip().splitlines()
    assert any("refund_unknown_order=1" in line for line in totals), err
    assert any("reversed=2" in line for line in totals), err


def test_refund_after_payment_posts_the_opposite(stack):
    s = stack
    s.stripe.add_customer("cus_alice")
    s.stripe.add_customer("cus_bob")
    s.config(webhook=False)
    s.referral()
    w = s.start()
    s.wait_status("alice", "paid")
    s.wait_status("bob", "paid")
    s.send("refund", "bob", order="in_1")
    wait_until(lambda: len(credits(s.stripe, "cus_alice")) == 2 and len(credits(s.stripe, "cus_bob")) == 2,
               timeout=20)
    assert credits(s.stripe, "cus_alice") == [-1000, 1000]
    assert credits(s.stripe, "cus_bob") == [-1000, 1000]
    assert s.stripe.balance("cus_alice") == 0
    reverse = [q for q in s.stripe.requests if q.headers.get("idempotency-key", "").endswith("-reverse")]
    assert len(reverse) == 2 and all(q.params["metadata[reverses]"].startswith("cbtxn_") for q in reverse)
    assert s.status("alice") == "reversed"
    s.stop(w)


def test_refund_outside_the_clawback_window_changes_nothing(sqlite_stack):
    s = sqlite_stack
    s.config(rules=HOLD_RULES.format(hold="0s", clawback="1h"), stripe=False, webhook=False)
    t0 = int(time.time() * 1000) - 5 * HOUR_MS
    s.code = ctl(s.db.url, "code", "create", "--user", "alice", check=True)[1].strip()
    s.send("subscribe", "alice", ts=t0)
    s.send("signup", "bob", code=s.code, ts=t0, first_ts=t0)
    s.send("subscribe", "bob", code=s.code, order="in_9", ts=t0, first_ts=t0)
    s.send("refund", "bob", order="in_9", ts=t0 + HOUR_MS + 1000)   # 1 h 1 s later: outside
    w = s.start()
    wait_until(lambda: s.status("bob") == "available", timeout=20)
    time.sleep(1.5)
    assert s.status("alice") == "available" and s.status("bob") == "available"
    s.send("refund", "bob", order="in_9", ts=t0 + HOUR_MS - 1000)   # inside
    s.wait_status("bob", "reversed")
    err = s.stop(w)
    assert "refund_outside_window=1" in err, err


# ------------------------------------------------------ dead and retried

def test_dead_on_400_then_retry(sqlite_stack):
    s = sqlite_stack
    s.stripe.add_customer("cus_alice")
    s.stripe.add_customer("cus_bob")
    s.config(webhook=False)
    s.stripe.fail_next(1, "400", message="This customer has no tax id", path="/v1/customers/cus_alice")
    s.referral()
    w = s.start()
    s.wait_status("bob", "paid")
    wait_until(lambda: len(s.deliveries("dead")) == 1)
    dead = s.deliveries("dead")[0]
    assert "This customer has no tax id" in dead["last_error"] and dead["attempts"] == 1
    assert s.status("alice") == "available"
    rc, out, _ = ctl(s.db.url, "deliveries", "--state", "dead")
    assert rc == 0 and "no tax id" in out
    rc, out, err = ctl(s.db.url, "deliveries", "retry", str(dead["id"]))
    assert rc == 0 and "queued again" in out, err
    s.wait_status("alice", "paid")
    assert credits(s.stripe, "cus_alice") == [-1000]
    # Retrying what is not dead, or nothing, is refused.
    rc, _, err = ctl(s.db.url, "deliveries", "retry", str(dead["id"]))
    assert rc == 1 and "not dead" in err
    rc, _, err = ctl(s.db.url, "deliveries", "retry", "999")
    assert rc == 1 and "no delivery with id 999" in err
    rc, _, err = ctl(s.db.url, "deliveries", "--state", "lost")
    assert rc == 1 and "bad state" in err
    s.stop(w)


def test_dead_after_max_attempts(sqlite_stack):
    s = sqlite_stack
    s.stripe.add_customer("cus_alice")
    s.stripe.add_customer("cus_bob")
    s.config(webhook=False, max_attempts=2)
    s.stripe.fail_next(4, "500", path="/v1/customers/")
    s.referral()
    w = s.start()
    wait_until(lambda: len(s.deliveries("dead")) == 2, timeout=30)
    for d in s.deliveries("dead"):
        assert d["attempts"] == 2 and "gave up after 2 attempts" in d["last_error"]
    assert credits(s.stripe, "cus_alice") == [] and s.status("alice") == "available"
    s.stop(w)


# --------------------------------------------------------------- webhooks

def test_webhooks_reach_a_receiver_that_was_down(stack):
    s = stack
    s.config(stripe=False)
    s.hooks.down(True)
    s.referral(customers=False)
    s.send("signup", "carol", code="")
    w = s.start()
    wait_until(lambda: len(s.hooks.deliveries) >= 3, timeout=20)   # tried, refused (503)
    assert not s.hooks.events
    s.hooks.down(False)
    # referral.linked for bob, reward.created + reward.available for both sides
    wait_until(lambda: len(s.hooks.events) == 5, timeout=30)
    time.sleep(1.5)
    events = s.hooks.events
    assert len(events) == 5 and not s.hooks.bad
    assert len({e["id"] for e in events}) == 5          # every event once
    assert all(re.fullmatch(r"evt_[0-9a-f]{32}", e["id"]) for e in events)
    linked = [e for e in events if e["type"] == "referral.linked"][0]["data"]["object"]
    assert linked["user"] == "bob" and linked["referred_by"] == "alice" and linked["code"] == s.code
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", linked["linked_at"])
    # A retried event kept its id and body: the first refused try sent the same bytes.
    first = {}
    for d in s.hooks.deliveries:
        first.setdefault(json.loads(d.body)["id"], d.body)
    for d in s.hooks.deliveries:
        assert first[json.loads(d.body)["id"]] == d.body
    # Stripe's own SDK verifies the signature too.
    d = s.hooks.deliveries[-1]
    sdk = verify_with_stripe_sdk(d.body, d.headers["referral-signature"], SECRET)
    assert sdk is True   # python3-stripe is installed by build.sh
    assert verify(SECRET, d.body, d.headers["referral-signature"]) is None
    assert verify(b"whsec_other", d.body, d.headers["referral-signature"]) is not None
    s.stop(w)


# ------------------------------------------------------------ refused start

def test_missing_key_file_refused_at_start(sqlite_stack):
    s = sqlite_stack
    s.config()
    os.remove(s.key_file)
    p = subprocess.run([WORKER, "--config", s.config_file, "--redis", s.redis.url, "--stream", s.stream,
                        "--database", s.db.url, "--once"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 2
    assert s.key_file in p.stderr and "stripe.api_key_file" in p.stderr
    assert API_KEY not in p.stderr


# ------------------------------------------------------------- migration

@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
@pytest.mark.parametrize("version", [1, 2])
def test_migration_keeps_rewards(backend, version, tmp, pg):
    db = MainDb(backend, tmp, pg)
    ctl(db.url, "migrate", "--to", str(version), check=True)
    db.query("INSERT INTO referral (id, user_id, code, label, created_at)"
             " VALUES (1, 'alice', 'ALICE', '', '2026-01-01 00:00:00.000000')")
    db.query("INSERT INTO referral_response (id, event_id, referral_id, action, created_at)"
             f" VALUES (1, '{'a' * 32}', 1, 'subscribe', '2026-01-02 00:00:00.000000')")
    for rid, user, role, redeemed in ((1, "alice", "referrer", "TRUE"), (2, "bob", "referee", "FALSE")):
        db.query("INSERT INTO referral_reward (id, referral_type, user_id, role, referred_user_id, response_id,"
                 " kind, amount, currency, date_credited, date_redeemed, redeemed) VALUES"
                 f" ({rid}, 'give-10-get-10', '{user}', '{role}', 'bob', 1, 'credit', 1000, 'usd',"
                 f" '2026-01-02 00:00:00.000000', {'NULL' if redeemed == 'FALSE' else repr('2026-01-03 00:00:00.000000')},"
                 f" {redeemed})")
    rc, out, err = ctl(db.url, "migrate")
    assert rc == 0 and f"version {version} to 4" in out, err
    rc, j, err = ctl(db.url, "rewards", "--user", "alice", json_out=True)
    alice = j["rewards"][0]
    assert alice["status"] == "redeemed" and alice["redeemed"] is True and alice["amount"] == 1000
    rc, j, _ = ctl(db.url, "rewards", "--user", "bob", json_out=True)
    bob = j["rewards"][0]
    assert bob["status"] == "available" and bob["available_at"] == "2026-01-02T00:00:00Z"
    assert db.count("SELECT count(*) FROM referral_delivery") == 0
    assert db.query("SELECT count(*) FROM referral_user WHERE stripe_customer_id IS NOT NULL") == [("0",)]
    rc, out, _ = ctl(db.url, "rewards", "--user", "bob")
    assert "available" in out


# ------------------------------------------------------ daily_cap, review

CAP_RULES = """
[[reward]]
name = "signup-credit"
action = "signup"
referrer_plan = "any"
referrer = { kind = "credit", amount = 500, currency = "usd" }
referee = { kind = "credit", amount = 500, currency = "usd" }
daily_cap = 2
"""


def test_daily_cap_sends_to_review_then_approve_and_reject(stack):
    s = stack
    s.config(rules=CAP_RULES, stripe=False, webhook=False)
    code = ctl(s.db.url, "code", "create", "--user", "alice", check=True)[1].strip()
    for friend in ("f1", "f2", "f3", "f4"):   # the cap, then two past it, the same UTC day
        s.send("signup", friend, code=code)
    w = s.start()
    wait_until(lambda: s.db.count("SELECT count(*) FROM referral_reward WHERE role = 'referrer'") == 4)
    statuses = s.db.query("SELECT referred_user_id, status, COALESCE(reason, '') FROM referral_reward"
                          " WHERE role = 'referrer' ORDER BY referred_user_id")
    assert statuses == [("f1", "available", ""), ("f2", "available", ""),
                        ("f3", "review", "daily_cap"), ("f4", "review", "daily_cap")]
    rc, j, _ = ctl(s.db.url, "review", json_out=True)
    in_review = [r for r in j["rewards"] if r["role"] == "referrer"]
    assert [r["referred_user"] for r in in_review] == ["f3", "f4"]
    rc, out, _ = ctl(s.db.url, "review")
    assert rc == 0 and "daily_cap" in out
    rc, j, err = ctl(s.db.url, "review", "approve", str(in_review[0]["id"]), json_out=True)
    assert rc == 0 and j["status"] == "available", err
    rc, j, err = ctl(s.db.url, "review", "reject", str(in_review[1]["id"]), "--reason", "farming", json_out=True)
    assert rc == 0 and j["status"] == "rejected" and j["reason"] == "farming", err
    # Final: neither can be decided again; a clear error, exit 1.
    rc, _, err = ctl(s.db.url, "review", "approve", str(in_review[1]["id"]))
    assert rc == 1 and "rejected, not in review" in err
    rc, j, _ = ctl(s.db.url, "review", "reject", str(in_review[0]["id"]), json_out=True)
    assert rc == 1 and j["reason"] == "not_in_review"
    rc, _, err = ctl(s.db.url, "review", "approve", "999")
    assert rc == 1 and "no reward with id 999" in err
    err = s.stop(w)
    assert "reviewed=2" in err, err


def test_two_workers_never_send_the_same_delivery(stack):
    s = stack
    s.config(webhook=False, extra='[[reward]]\nname = "signup-credit"\naction = "signup"\nreferrer_plan = "any"\n'
             'referrer = { kind = "credit", amount = 100, currency = "usd" }\n'
             'referee = { kind = "credit", amount = 100, currency = "usd" }\n')
    code = ctl(s.db.url, "code", "create", "--user", "alice", check=True)[1].strip()
    s.stripe.add_customer("cus_alice")
    s.send("subscribe", "alice", customer="cus_alice")
    friends = [f"f{i}" for i in range(30)]
    for f in friends:
        s.stripe.add_customer(f"cus_{f}")
        s.send("signup", f, code=code, customer=f"cus_{f}")
    workers = [s.start(consumer="a"), s.start(consumer="b")]
    wait_until(lambda: s.db.count("SELECT count(*) FROM referral_reward WHERE status = 'paid'") == 60, timeout=60)
    keys = [q.headers.get("idempotency-key") for q in s.stripe.requests if q.method == "POST"]
    assert len(keys) == 60 and len(set(keys)) == 60   # each request sent once, by one worker
    assert s.stripe.balance("cus_alice") == -3000
    for w in workers:
        s.stop(w)
