"""Tests of the fake Stripe API and webhook receiver themselves (fake_stripe.py),
spoken to with http.client, so the worker's tests can trust what they see."""

import http.client
import json
import socket
import threading
import time
from urllib.parse import urlencode

import pytest

from fake_stripe import FakeStripe, WebhookReceiver, sign, verify, verify_with_stripe_sdk

KEY = "sk_test_fake_key_0123456789"
VERSION = "2024-06-20"


@pytest.fixture
def stripe():
    fake = FakeStripe(api_key=KEY).start()
    yield fake
    fake.close()
    assert fake.errors == []


def call(fake, method, path, params=(), key=None, api_key=KEY, conn=None,
         ctype="application/x-www-form-urlencoded", body=None):
    """-> (status, headers dict lowercased, parsed JSON)."""
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", fake.port, timeout=10)
    headers = {"Stripe-Version": VERSION}
    if api_key is not None:
        headers["Authorization"] = f"Bearer {api_key}"
    if key is not None:
        headers["Idempotency-Key"] = key
    if body is None and method == "POST":
        body = urlencode(list(params)).encode()
    if body is not None:
        headers["Content-Type"] = ctype
    try:
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, json.loads(data)
    finally:
        if own:
            conn.close()


def credit(fake, cus, amount, key=None, **kw):
    return call(fake, "POST", f"/v1/customers/{cus}/balance_transactions",
                [("amount", str(amount)), ("currency", "usd"),
                 ("description", "$10.00 credit"), ("metadata[reward_id]", "7")],
                key=key, **kw)


def test_auth_is_required(stripe):
    cus = stripe.add_customer()
    status, headers, body = call(stripe, "GET", f"/v1/customers/{cus}", api_key=None)
    assert status == 401 and body["error"]["type"] == "invalid_request_error"
    assert "did not provide an API key" in body["error"]["message"]
    status, _, body = call(stripe, "GET", f"/v1/customers/{cus}", api_key="sk_test_wrong_key_1")
    assert status == 401
    assert body["error"]["message"].startswith("Invalid API Key provided: ")
    assert "sk_test_wrong_key_1" not in body["error"]["message"]  # masked
    status, headers, body = call(stripe, "GET", f"/v1/customers/{cus}")
    assert status == 200 and body["id"] == cus and body["balance"] == 0
    assert headers["request-id"].startswith("req_")
    assert stripe.versions_seen == {VERSION}


def test_keep_alive_and_content_length(stripe):
    cus = stripe.add_customer()
    conn = http.client.HTTPConnection("127.0.0.1", stripe.port, timeout=10)
    call(stripe, "GET", f"/v1/customers/{cus}", conn=conn)
    sock = conn.sock
    for i in range(3):
        status, headers, _ = credit(stripe, cus, -100, conn=conn)
        assert status == 200 and int(headers["content-length"]) > 0
    assert conn.sock is sock  # one connection served all four
    conn.close()
    assert stripe.balance(cus) == -300
    assert stripe.connections == 1 and len(stripe.requests) == 4
    call(stripe, "GET", f"/v1/customers/{cus}")  # a connection of its own
    assert stripe.connections == 2


def test_balance_transaction_credits_the_customer(stripe):
    cus = stripe.add_customer()
    status, _, txn = credit(stripe, cus, -1000, key="referral-7-credit")
    assert status == 200
    assert txn["object"] == "customer_balance_transaction"
    assert txn["id"].startswith("cbtxn_")
    assert (txn["amount"], txn["currency"], txn["customer"]) == (-1000, "usd", cus)
    assert txn["description"] == "$10.00 credit"
    assert txn["metadata"] == {"reward_id": "7"}
    assert txn["ending_balance"] == -1000
    status, _, txn2 = credit(stripe, cus, 250, key="referral-7-reversal")
    assert txn2["ending_balance"] == -750
    assert stripe.balance(cus) == -750
    assert call(stripe, "GET", f"/v1/customers/{cus}")[2]["balance"] == -750
    assert [t["amount"] for t in stripe.balance_transactions(cus)] == [-1000, 250]
    req = stripe.requests[0]
    assert req.method == "POST" and req.params["metadata[reward_id]"] == "7"
    assert req.headers["idempotency-key"] == "referral-7-credit"
    assert stripe.count("POST", "/v1/customers/") == 2


def test_a_customer_from_the_api(stripe):
    status, _, cus = call(stripe, "POST", "/v1/customers", [("email", "a@example.com")])
    assert status == 200 and cus["id"].startswith("cus_")
    credit(stripe, cus["id"], -5)
    assert stripe.balance(cus["id"]) == -5


def test_parameter_validation(stripe):
    cus = stripe.add_customer()
    path = f"/v1/customers/{cus}/balance_transactions"
    status, _, body = call(stripe, "POST", path, [("currency", "usd")], key="k1")
    assert status == 400
    assert body["error"] == {"type": "invalid_request_error", "code": "parameter_missing",
                             "param": "amount", "message": "Missing required param: amount."}
    status, _, body = call(stripe, "POST", path, [("amount", "abc"), ("currency", "usd")])
    assert status == 400 and body["error"]["message"] == "Invalid integer: abc"
    status, _, body = call(stripe, "POST", path, [("amount", "-5")])
    assert body["error"]["param"] == "currency"
    status, _, body = call(stripe, "POST", path, [("amount", "-5"), ("currency", "USD")])
    assert status == 400 and body["error"]["param"] == "currency"
    status, _, body = call(stripe, "POST", path, [("amount", "-5"), ("currency", "usd"),
                                                  ("colour", "red")])
    assert status == 400 and body["error"]["code"] == "parameter_unknown"
    status, _, body = call(stripe, "POST", path, body=b'{"amount": -5}',
                           ctype="application/json")
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    status, _, body = call(stripe, "POST", path, body=b"amount", key="k2")
    assert status == 400
    assert stripe.balance(cus) == 0
    # A request that failed validation saved nothing for its key [idem]:
    # the corrected request may use the same key.
    status, _, _ = credit(stripe, cus, -5, key="k1")
    assert status == 200 and stripe.balance(cus) == -5
    status, _, body = call(stripe, "POST", "/v1/charges", [("amount", "1")])
    assert status == 404 and "Unrecognized request URL" in body["error"]["message"]


def test_unknown_customer_is_404_and_saved(stripe):
    status, _, body = credit(stripe, "cus_missing", -1000, key="k")
    assert status == 404
    assert body["error"]["code"] == "resource_missing"
    assert body["error"]["message"] == "No such customer: 'cus_missing'"
    # The endpoint ran, so the 404 is the saved result for the key [errlow].
    stripe.add_customer(id="cus_missing")
    status, headers, again = credit(stripe, "cus_missing", -1000, key="k")
    assert (status, again) == (404, body) and headers["idempotent-replayed"] == "true"
    assert stripe.balance("cus_missing") == 0
    assert call(stripe, "GET", "/v1/customers/cus_nope")[0] == 404


def test_idempotent_replay(stripe):
    cus = stripe.add_customer()
    status, headers, first = credit(stripe, cus, -1000, key="referral-1-credit")
    assert status == 200 and "idempotent-replayed" not in headers
    status, headers, second = credit(stripe, cus, -1000, key="referral-1-credit")
    assert status == 200 and second == first
    assert headers["idempotent-replayed"] == "true"
    assert headers["request-id"].startswith("req_")
    assert stripe.balance(cus) == -1000 and len(stripe.balance_transactions()) == 1
    assert stripe.idempotency_state("referral-1-credit") == 200
    # Without a key every request executes.
    credit(stripe, cus, -1000)
    credit(stripe, cus, -1000)
    assert stripe.balance(cus) == -3000


def test_same_key_other_parameters_is_an_idempotency_error(stripe):
    cus = stripe.add_customer()
    credit(stripe, cus, -1000, key="k")
    status, _, body = credit(stripe, cus, -2000, key="k")
    assert status == 400 and body["error"]["type"] == "idempotency_error"
    assert body["error"]["message"].startswith(
        "Keys for idempotent requests can only be used with the same parameters")
    other = stripe.add_customer()
    status, _, body = credit(stripe, other, -1000, key="k")  # another path
    assert status == 400 and body["error"]["type"] == "idempotency_error"
    assert stripe.balance(cus) == -1000 and stripe.balance(other) == 0


def test_concurrent_use_of_a_key_is_409(stripe):
    cus = stripe.add_customer()
    stripe.fail_next(1, "slow", seconds=3.0)  # the second request must come within it
    first = {}
    t = threading.Thread(target=lambda: first.setdefault("r", credit(stripe, cus, -1000, key="k")))
    t.start()
    deadline = time.time() + 10
    while stripe.idempotency_state("k") != "in_progress" and time.time() < deadline:
        time.sleep(0.01)
    assert stripe.idempotency_state("k") == "in_progress"
    status, _, body = credit(stripe, cus, -1000, key="k")
    assert status == 409 and body["error"]["type"] == "idempotency_error"
    assert body["error"]["code"] == "idempotency_key_in_use"
    t.join()
    assert first["r"][0] == 200
    status, headers, body = credit(stripe, cus, -1000, key="k")
    assert status == 200 and body == first["r"][2]
    assert stripe.balance(cus) == -1000


def test_coupon_and_promotion_code(stripe):
    cus = stripe.add_customer()
    status, _, coupon = call(stripe, "POST", "/v1/coupons",
                             [("amount_off", "1000"), ("currency", "usd"),
                              ("duration", "once"), ("max_redemptions", "1")], key="c")
    assert status == 200 and coupon["object"] == "coupon"
    assert (coupon["amount_off"], coupon["currency"], coupon["duration"],
            coupon["max_redemptions"]) == (1000, "usd", "once", 1)
    status, _, promo = call(stripe, "POST", "/v1/promotion_codes",
                            [("coupon", coupon["id"]), ("customer", cus),
                             ("max_redemptions", "1")], key="p")
    assert status == 200 and promo["id"].startswith("promo_")
    assert promo["object"] == "promotion_code" and promo["active"] is True
    assert promo["code"].isupper() and len(promo["code"]) >= 6
    assert promo["coupon"]["id"] == coupon["id"] and promo["customer"] == cus
    assert stripe.coupons[coupon["id"]]["amount_off"] == 1000
    assert stripe.promotion_codes[promo["id"]]["customer"] == cus
    # Deactivation, as a reversal does.
    status, _, updated = call(stripe, "POST", f"/v1/promotion_codes/{promo['id']}",
                              [("active", "false")], key="d")
    assert status == 200 and updated["active"] is False
    assert call(stripe, "GET", f"/v1/promotion_codes/{promo['id']}")[2]["active"] is False
    assert stripe.promotion_codes[promo["id"]]["active"] is False
    # The saved answer of the create is what it was then.
    status, headers, replay = call(stripe, "POST", "/v1/promotion_codes",
                                   [("coupon", coupon["id"]), ("customer", cus),
                                    ("max_redemptions", "1")], key="p")
    assert headers["idempotent-replayed"] == "true" and replay == promo
    assert len(stripe.promotion_codes) == 1
    # Without a customer: usable by anyone.
    status, _, open_promo = call(stripe, "POST", "/v1/promotion_codes",
                                 [("coupon", coupon["id"])])
    assert status == 200 and open_promo["customer"] is None


def test_promotion_code_errors(stripe):
    status, _, body = call(stripe, "POST", "/v1/promotion_codes", [("max_redemptions", "1")])
    assert status == 400 and body["error"]["param"] == "coupon"
    status, _, body = call(stripe, "POST", "/v1/promotion_codes", [("coupon", "nope")])
    assert status == 400 and body["error"]["code"] == "resource_missing"
    _, _, coupon = call(stripe, "POST", "/v1/coupons", [("amount_off", "5"),
                                                        ("currency", "usd")])
    status, _, body = call(stripe, "POST", "/v1/promotion_codes",
                           [("coupon", coupon["id"]), ("customer", "cus_nope")])
    assert status == 400 and body["error"]["message"] == "No such customer: 'cus_nope'"
    status, _, body = call(stripe, "POST", "/v1/promotion_codes/promo_nope",
                           [("active", "false")])
    assert status == 404 and body["error"]["code"] == "resource_missing"
    status, _, body = call(stripe, "POST", "/v1/coupons", [("amount_off", "5")])
    assert status == 400 and body["error"]["param"] == "currency"
    assert stripe.promotion_codes == {}


def test_fault_500_is_not_applied(stripe):
    cus = stripe.add_customer()
    stripe.fail_next(1, "500")
    status, headers, body = credit(stripe, cus, -1000, key="k")
    assert status == 500 and body["error"]["type"] == "api_error"
    assert "stripe-should-retry" not in headers
    assert stripe.balance(cus) == 0 and stripe.faults_pending() == 0
    # In front of the idempotency layer: the retry executes.
    status, headers, _ = credit(stripe, cus, -1000, key="k")
    assert status == 200 and "idempotent-replayed" not in headers
    assert stripe.balance(cus) == -1000


def test_fault_500_saved_is_replayed(stripe):
    cus = stripe.add_customer()
    stripe.fail_next(1, "500", saved=True)
    assert credit(stripe, cus, -1000, key="k")[0] == 500
    status, headers, _ = credit(stripe, cus, -1000, key="k")
    assert status == 500 and headers["idempotent-replayed"] == "true"
    assert stripe.balance(cus) == 0
    assert credit(stripe, cus, -1000, key="k2")[0] == 200


def test_fault_429_retry_after(stripe):
    cus = stripe.add_customer()
    stripe.fail_next(2, "429", retry_after=3)
    for _ in range(2):
        status, headers, body = credit(stripe, cus, -1000, key="k")
        assert status == 429 and headers["retry-after"] == "3"
        assert body["error"]["type"] == "rate_limit_error"
    assert stripe.balance(cus) == 0
    assert credit(stripe, cus, -1000, key="k")[0] == 200
    assert stripe.balance(cus) == -1000


def test_fault_400_and_should_retry_false(stripe):
    cus = stripe.add_customer()
    stripe.fail_next(1, "400", message="This customer has no address.")
    stripe.fail_next(1, "should_retry_false")
    status, _, body = credit(stripe, cus, -1000, key="k")
    assert status == 400 and body["error"]["message"] == "This customer has no address."
    status, headers, body = credit(stripe, cus, -1000, key="k")
    assert status == 500 and headers["stripe-should-retry"] == "false"
    assert stripe.balance(cus) == 0 and stripe.faults_pending() == 0


def test_fault_close_after_apply(stripe):
    cus = stripe.add_customer()
    stripe.fail_next(1, "close_after_apply")
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        credit(stripe, cus, -1000, key="referral-9-credit")
    assert stripe.balance(cus) == -1000  # applied although nobody heard it
    assert stripe.requests[-1].status is None
    status, headers, txn = credit(stripe, cus, -1000, key="referral-9-credit")
    assert status == 200 and headers["idempotent-replayed"] == "true"
    assert txn["id"] == stripe.balance_transactions(cus)[0]["id"]
    assert stripe.balance(cus) == -1000 and len(stripe.balance_transactions()) == 1


def test_fault_slow_is_applied(stripe):
    cus = stripe.add_customer()
    stripe.fail_next(1, "slow", seconds=0.2)
    status, _, txn = credit(stripe, cus, -1000, key="k")
    assert status == 200 and txn["ending_balance"] == -1000
    # A client that gave up before the answer still finds the credit made.
    stripe.fail_next(1, "slow", seconds=1.0)
    conn = http.client.HTTPConnection("127.0.0.1", stripe.port, timeout=0.2)
    with pytest.raises((socket.timeout, TimeoutError)):
        credit(stripe, cus, -500, key="k2", conn=conn)
    conn.close()
    deadline = time.time() + 10
    while stripe.idempotency_state("k2") != 200 and time.time() < deadline:
        time.sleep(0.02)
    assert stripe.balance(cus) == -1500


def test_faults_by_path_in_order(stripe):
    cus = stripe.add_customer()
    stripe.fail_next(1, "500", path="/v1/coupons")
    stripe.fail_next(1, "429", path="/v1/customers/")
    assert stripe.faults_pending() == 2
    assert credit(stripe, cus, -1)[0] == 429
    assert credit(stripe, cus, -1)[0] == 200
    assert stripe.faults_pending() == 1
    assert call(stripe, "POST", "/v1/coupons", [("amount_off", "5"),
                                                ("currency", "usd")])[0] == 500
    assert stripe.faults_pending() == 0 and stripe.coupons == {}
    with pytest.raises(ValueError):
        stripe.fail_next(1, "teapot")


# ----------------------------------------------------------------- webhooks

SECRET = b"whsec_test_secret"


def post(receiver, body, signature, conn=None):
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=10)
    try:
        conn.request("POST", "/hooks/referral", body=body,
                     headers={"Content-Type": "application/json",
                              "Referral-Signature": signature})
        r = conn.getresponse()
        r.read()
        return r.status
    finally:
        if own:
            conn.close()


@pytest.fixture
def receiver():
    r = WebhookReceiver(SECRET).start()
    yield r
    r.close()


def event(n=1):
    return json.dumps({"id": f"evt_{n}", "type": "reward.available",
                       "created": int(time.time()), "data": {"object": {"id": n}}}).encode()


def test_webhook_signature_verified(receiver):
    body = event()
    assert post(receiver, body, sign(SECRET, body)) == 200
    assert receiver.events == [json.loads(body)] and receiver.bad == []
    assert receiver.deliveries[0].headers["content-type"] == "application/json"

    tampered = body.replace(b'"id": 1', b'"id": 2')
    assert tampered != body
    assert post(receiver, tampered, sign(SECRET, body)) == 400
    assert post(receiver, body, sign(b"another secret", body)) == 400
    assert post(receiver, body, sign(SECRET, body, t=int(time.time()) - 1000)) == 400
    assert post(receiver, body, "v1=" + "0" * 64) == 400
    assert len(receiver.events) == 1 and len(receiver.bad) == 4
    assert "tolerance" in receiver.bad[2].reason


def test_webhook_verification_agrees_with_stripe_sdk():
    body = event(5)
    good = sign(SECRET, body)
    if verify_with_stripe_sdk(body, good, SECRET) is None:
        pytest.skip("python3-stripe is not installed")
    cases = [(body, good), (body + b" ", good), (body, sign(b"other", body)),
             (body, sign(SECRET, body, t=int(time.time()) - 1000)),
             (body, good.replace("t=", "t=1"))]
    for payload, header in cases:
        ours = verify(SECRET, payload, header) is None
        assert WebhookReceiver.verify_with_stripe_sdk(payload, header, SECRET) is ours
    assert verify_with_stripe_sdk(body, good, SECRET) is True


def test_webhook_down_failures_and_restart(receiver):
    body = event(2)
    receiver.down(True)
    assert post(receiver, body, sign(SECRET, body)) == 503
    receiver.down(False)
    receiver.fail_next(2, 500)
    assert post(receiver, body, sign(SECRET, body)) == 500
    assert post(receiver, body, sign(SECRET, body)) == 500
    assert receiver.events == []
    conn = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=10)
    assert post(receiver, body, sign(SECRET, body), conn=conn) == 200
    port = receiver.port
    receiver.stop()
    with pytest.raises(OSError):  # the kept-alive connection is gone too
        post(receiver, body, sign(SECRET, body), conn=conn)
    with pytest.raises(ConnectionRefusedError):
        post(receiver, body, sign(SECRET, body))
    receiver.start()
    assert receiver.port == port
    assert post(receiver, body, sign(SECRET, body)) == 200
    assert [e["id"] for e in receiver.events] == ["evt_2", "evt_2"]
    assert [d.status for d in receiver.deliveries] == [503, 500, 500, 200, 200]
