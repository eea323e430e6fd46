#!/usr/bin/env python3
"""bench/delivery.py: how fast referral-worker delivers rewards to Stripe.

Makes N available stripe_balance rewards (N/2 referred friends of one
referrer, both sides credited) in a fresh SQLite database through the real
path (events in a Redis stream, `referral-worker --once`), then starts the
worker against the local Stripe of the tests (tests/integration/fake_stripe.py)
and times the delivery loop until every delivery is done. Prints
deliveries/s, requests per delivery (the ideal is 1) and, as the baseline of
the same run, the rate at which one keep-alive Python client posts the same
number of balance transactions to that server directly.

    bench/delivery.sh [N]        (default 10000)
"""
import http.client
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from fake_stripe import FakeStripe  # noqa: E402
from harness import RedisServer, event_fields, xadd_args  # noqa: E402

BUILD = os.environ.get("REFERRAL_BUILD_DIR", os.path.join(ROOT, "build"))
WORKER, CTL = os.path.join(BUILD, "referral-worker"), os.path.join(BUILD, "referralctl")
KEY = "sk_test_" + "b" * 24


def baseline(stripe, n):
    """One keep-alive client, the same requests, no database."""
    u = urllib.parse.urlparse(stripe.url)
    conn = http.client.HTTPConnection(u.hostname, u.port)
    start = time.monotonic()
    for i in range(n):
        body = urllib.parse.urlencode({"amount": "-1000", "currency": "usd", "description": "$10.00 credit",
                                       "metadata[reward_id]": str(i)})
        conn.request("POST", "/v1/customers/cus_base/balance_transactions", body=body,
                     headers={"Authorization": "Bearer " + KEY, "Idempotency-Key": f"base-{i}",
                              "Content-Type": "application/x-www-form-urlencoded",
                              "Stripe-Version": "2024-06-20"})
        r = conn.getresponse()
        r.read()
        assert r.status == 200, r.status
    return n / (time.monotonic() - start)


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    friends = n // 2
    tmp = tempfile.mkdtemp(prefix="referral-bench-delivery-")
    redis = RedisServer().start()
    stripe = FakeStripe(api_key=KEY).start()
    try:
        db = os.path.join(tmp, "referral.db")
        key_file = os.path.join(tmp, "stripe.key")
        with open(key_file, "w") as f:
            f.write(KEY)
        config = os.path.join(tmp, "worker.toml")
        with open(config, "w") as f:
            f.write(f'[stripe]\napi_key_file = "{key_file}"\napi_base = "{stripe.url}"\n'
                    '[[reward]]\nname = "give-10-get-10"\naction = "subscribe"\nreferrer_plan = "any"\n'
                    'referrer = { kind = "credit", amount = 1000, currency = "usd" }\n'
                    'referee = { kind = "credit", amount = 1000, currency = "usd" }\n')
        url = "sqlite://" + db
        subprocess.run([CTL, "--database", url, "migrate"], check=True, capture_output=True)
        code = subprocess.run([CTL, "--database", url, "code", "create", "--user", "alice"], check=True,
                              capture_output=True, text=True).stdout.split()[0]
        stripe.add_customer("cus_alice")
        stripe.add_customer("cus_base")
        for i in range(friends):
            stripe.add_customer(f"cus_f{i}")
        stream = "referral:events"
        c = redis.client()
        cmds = [xadd_args(stream, event_fields("conversion", code="", action="subscribe", user="alice",
                                               customer="cus_alice"))]
        for i in range(friends):
            cmds.append(xadd_args(stream, event_fields("conversion", code=code, action="signup", user=f"f{i}")))
            cmds.append(xadd_args(stream, event_fields("conversion", code=code, action="subscribe", user=f"f{i}",
                                                       order=f"in_{i}", customer=f"cus_f{i}")))
        for at in range(0, len(cmds), 2000):
            c.pipeline(cmds[at:at + 2000])
        args = [WORKER, "--config", config, "--redis", redis.url, "--database", url, "--consumer", "bench"]
        subprocess.run(args + ["--once"], check=True, capture_output=True)
        con = sqlite3.connect(db)
        queued = con.execute("SELECT count(*) FROM referral_delivery WHERE state = 'queued'").fetchone()[0]
        assert queued == n, f"{queued} deliveries queued, expected {n}"

        requests_before = len(stripe.requests)
        start = time.monotonic()
        w = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        while True:
            done = con.execute("SELECT count(*) FROM referral_delivery WHERE state = 'done'").fetchone()[0]
            if done == n:
                break
            if w.poll() is not None:
                raise SystemExit("the worker exited: " + w.stderr.read())
            time.sleep(0.05)
        elapsed = time.monotonic() - start
        w.terminate()
        w.communicate(timeout=30)
        requests = len(stripe.requests) - requests_before
        paid = con.execute("SELECT count(*) FROM referral_reward WHERE status = 'paid'").fetchone()[0]
        credited = sum(1 for t in stripe.balance_transactions() if t["customer"] != "cus_base")
        con.close()
        rate = n / elapsed
        base = baseline(stripe, n)
        print(f"deliveries:            {n} ({paid} rewards paid, {credited} balance transactions)")
        print(f"delivery loop:         {rate:,.0f} deliveries/s ({elapsed:.1f} s)")
        print(f"requests per delivery: {requests / n:.3f}")
        print(f"baseline (one keep-alive client, same server): {base:,.0f} requests/s")
        print(f"ratio delivery/baseline: {rate / base:.2f}")
    finally:
        stripe.close()
        redis.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
