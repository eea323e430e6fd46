"""What the deliveries look like on the wire (SPEC "Delivery to Stripe and to
the application"): a configured `api_version` is the Stripe-Version of
every request, retries included; a webhook endpoint's `events` filter picks
what it receives; many deliveries share one kept-alive connection to
Stripe. referral-worker against real Redis and SQLite, the local Stripe of
fake_stripe.py and its webhook receiver, all on 127.0.0.1. SQLite only:
none of this depends on the database (test_delivery.py covers both)."""

import re
from collections import Counter

import pytest

from fake_stripe import WebhookReceiver
from harness import ctl, wait_until
from test_delivery import API_KEY, PROMO_RULES, SECRET, Stack, hooks, redis, stripe  # noqa: F401 (fixtures)


@pytest.fixture
def s(redis, tmp, stripe, hooks):
    st = Stack("sqlite", redis, tmp, None, stripe, hooks)
    yield st
    st.close()


# ------------------------------------------------------------ api_version

# Not the default (2024-06-20), and in the form Stripe's newer versions
# have (a release name after the date).
PINNED = "2024-09-30.acacia"


def test_pinned_api_version_on_every_request_and_retry(s):
    s.stripe.add_customer("cus_alice")
    s.stripe.add_customer("cus_bob")
    s.config(rules=PROMO_RULES, webhook=False, api_version=PINNED)
    s.stripe.fail_next(2, "500", path="/v1/coupons")
    # The deactivation is applied but its answer is lost: retried, same key.
    s.stripe.fail_next(1, "close_after_apply", path="/v1/promotion_codes/")
    s.referral()
    w = s.start()
    s.wait_status("alice", "paid", timeout=40)
    s.wait_status("bob", "paid", timeout=40)
    s.send("refund", "bob", order="in_1")
    s.wait_status("alice", "reversed")
    s.wait_status("bob", "reversed")
    wait_until(lambda: len(s.deliveries("done")) == 4, timeout=30)
    assert len(s.deliveries("done")) == 4 and not s.stripe.faults_pending()
    s.stop(w)
    reqs = s.stripe.requests
    # Every kind of request the worker makes to Stripe is among them ...
    paths = Counter(re.sub(r"^/v1/promotion_codes/promo_\w+$", "/v1/promotion_codes/ID", q.path)
                    for q in reqs)
    assert set(paths) == {"/v1/coupons", "/v1/promotion_codes", "/v1/promotion_codes/ID"}, paths
    # ... and so are retries: 2 of a coupon and 1 of a deactivation.
    keys = Counter(q.headers["idempotency-key"] for q in reqs)
    assert sum(n - 1 for n in keys.values()) == 3, keys
    # Each one carried the pinned version, none the default or nothing.
    assert [q.headers.get("stripe-version") for q in reqs] == [PINNED] * len(reqs)
    assert s.stripe.versions_seen == {PINNED}


# ---------------------------------------------------- webhook events filter

PICKY = ["reward.available", "reward.redeemed"]


def test_webhook_events_filter(s, tmp):
    """An endpoint with `events` gets exactly those types; one without it
    gets all six kinds (the config's default: every event)."""
    picky = WebhookReceiver(SECRET).start()
    try:
        picky_url = f"{picky.url}/hooks/picky"
        events = ", ".join(f'"{e}"' for e in PICKY)
        s.config(stripe=False, extra=f'[[webhook]]\nurl = "{picky_url}"\n'
                                     f'secret_file = "{s.secret_file}"\nevents = [{events}]\n')
        s.referral(customers=False)    # linked, created x2, available x2
        w = s.start()
        s.wait_status("alice", "available")
        s.wait_status("bob", "available")
        rid = s.rewards()["alice"]["id"]
        rc, _, err = ctl(s.db.url, "--config", s.config_file, "redeem", str(rid))   # redeemed
        assert rc == 0, err
        s.send("refund", "bob", order="in_1")                                       # reversed x2
        s.wait_status("alice", "reversed")
        s.wait_status("bob", "reversed")
        # Done when every delivery row is: nothing more is on its way.
        all_done = lambda: (s.deliveries() and all(d["state"] == "done" for d in s.deliveries())
                            and len(s.hooks.events) >= 8)
        wait_until(all_done, timeout=30)
        assert all_done(), s.deliveries()
        s.stop(w)
        want_all = {"referral.linked": 1, "reward.created": 2, "reward.available": 2,
                    "reward.redeemed": 1, "reward.reversed": 2}
        assert Counter(e["type"] for e in s.hooks.events) == want_all
        assert Counter(e["type"] for e in picky.events) == {"reward.available": 2, "reward.redeemed": 1}
        assert not s.hooks.bad and not picky.bad
        assert len(picky.deliveries) == 3      # nothing else was even sent to it
        rows = Counter(d["endpoint"] for d in s.deliveries())
        assert rows == {picky_url: 3, f"{s.hooks.url}/hooks/referral": 8}, rows
    finally:
        picky.close()


# ------------------------------------------------------------- keep-alive

SIGNUP_CREDIT = """
[[reward]]
name = "signup-credit"
action = "signup"
referrer_plan = "any"
referrer = { kind = "credit", amount = 100, currency = "usd" }
referee = { kind = "credit", amount = 100, currency = "usd" }
"""


def test_deliveries_reuse_the_stripe_connection(s):
    s.config(rules=SIGNUP_CREDIT, webhook=False)
    code = ctl(s.db.url, "code", "create", "--user", "alice", check=True)[1].strip()
    s.stripe.add_customer("cus_alice")
    s.send("subscribe", "alice", customer="cus_alice")
    for i in range(10):                  # 10 friends: 20 credits, both sides
        s.stripe.add_customer(f"cus_f{i}")
        s.send("signup", f"f{i}", code=code, customer=f"cus_f{i}")
    w = s.start()
    paid = lambda: s.db.count("SELECT count(*) FROM referral_reward WHERE status = 'paid'")
    wait_until(lambda: paid() == 20, timeout=40)
    assert paid() == 20
    s.stop(w)
    assert s.stripe.count("POST", "/v1/customers/") == 20 == len(s.stripe.requests)
    # One connection for all of them (2 allowed: a server may close one).
    assert 1 <= s.stripe.connections <= 2, s.stripe.connections
