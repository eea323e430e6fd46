"""`referralctl serve`: every endpoint of the HTTP API, its successes and its
errors (401, 400, 404, 405, 409), /metrics from Redis and the database, and
two concurrent redeems of one reward, on SQLite and PostgreSQL (SPEC "HTTP
API and dashboard"). Rows come from referralctl and from the worker
applying events XADDed to a real Redis."""

import datetime
import json
import math
import subprocess
import threading
import uuid

import pytest

from api_harness import LINK_BASE, ApiServer
from harness import WORKER, MainDb, RedisServer, ctl, event_fields, xadd_args

STATUSES = ["pending", "review", "available", "paid", "redeemed", "reversed", "rejected"]


@pytest.fixture(scope="module")
def redis():
    r = RedisServer().start()
    yield r
    r.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp):
    pg = request.getfixturevalue("pg") if request.param == "postgresql" else None
    d = MainDb(request.param, tmp, pg)
    ctl(d.url, "migrate", check=True)
    return d


@pytest.fixture
def stream():
    return "api:" + uuid.uuid4().hex[:8]


@pytest.fixture
def api(db, tmp, redis, stream):
    s = ApiServer(tmp, db.url, redis_url=redis.url, stream=stream).start()
    yield s
    s.stop()


def run_worker(db, redis, stream):
    p = subprocess.run([WORKER, "--once", "--redis", redis.url, "--stream", stream, "--database", db.url],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr


def earn(db, redis, stream, referrer="alice", friends=("bob", "carol")):
    """`referrer` (free) refers each friend: a click and a signup each, then
    the worker: 7 trial days for both sides per friend."""
    code = ctl(db.url, "code", "create", "--user", referrer, check=True)[1].split("\n")[0]
    c = redis.client()
    for user in friends:
        c.cmd(*xadd_args(stream, event_fields("click", code=code)))
        c.cmd(*xadd_args(stream, event_fields("conversion", code=code, action="signup", user=user)))
    c.close()
    run_worker(db, redis, stream)
    return code


def reward_ids(db, user):
    return [int(r[0]) for r in db.query(f"SELECT id FROM referral_reward WHERE user_id = '{user}' ORDER BY id")]


def metrics(api):
    status, headers, text = api.get("/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


# ------------------------------------------------------------------ auth

ENDPOINTS = [("GET", "/v1/users/alice"), ("GET", "/v1/users/alice/rewards"),
             ("GET", "/v1/users/alice/friends"), ("POST", "/v1/users/alice/codes"),
             ("POST", "/v1/rewards/1/redeem"), ("GET", "/v1/stats"),
             ("GET", "/v1/deliveries/failing"), ("GET", "/metrics"), ("GET", "/"),
             ("GET", "/assets/dashboard.js"), ("GET", "/nowhere")]


@pytest.mark.parametrize("method,path", ENDPOINTS)
def test_every_endpoint_answers_401_without_the_token(api, method, path):
    for auth in (None, "Bearer wrong-token-of-some-length", f"Bearer {api.token}x", "Basic Z3Jvd3RoOndyb25n",
                 "Basic !!!!", f"Token {api.token}", "Bearer "):
        status, headers, body = api.request(method, path, auth=auth)
        assert status == 401, (auth, body)
        assert "Bearer" in body["error"]
        expected = "Basic" if path in ("/", "/assets/dashboard.js") else "Bearer"
        assert headers["www-authenticate"].startswith(expected)
    # nothing was created by the refused POSTs
    assert api.get("/v1/users/alice")[0] == 404


def test_the_token_as_basic_password_or_bearer(api, db):
    ctl(db.url, "code", "create", "--user", "alice", check=True)
    assert api.get("/v1/users/alice", auth="basic")[0] == 200
    assert api.get("/v1/users/alice", auth="bearer")[0] == 200
    assert api.get("/v1/users/alice", auth=f"bearer {api.token}")[0] == 200  # the scheme is case-insensitive


def test_basic_credentials_do_not_allow_cross_site_changes(api, db, redis, stream):
    """A page of another site can make a browser send its cached Basic
    credentials (CSRF): changes asked for that way are refused."""
    earn(db, redis, stream)
    rid = reward_ids(db, "alice")[0]
    for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Sec-Fetch-Site": "same-site", "Origin": f"http://127.0.0.1:{api.port}"}):
        status, _, body = api.post(f"/v1/rewards/{rid}/redeem", auth="basic", headers=headers)
        assert status == 403 and "cross-site" in body["error"], headers
        status, _, body = api.post("/v1/users/mallory/codes", {"label": ""}, auth="basic", headers=headers)
        assert status == 403
    assert db.query(f"SELECT status FROM referral_reward WHERE id = {rid}") == [("available",)]
    assert db.count("SELECT count(*) FROM referral WHERE user_id = 'mallory'") == 0
    # reading stays possible (the dashboard), and so do changes from this origin or with the Bearer token
    assert api.get("/v1/users/alice", auth="basic", headers={"Sec-Fetch-Site": "cross-site"})[0] == 200
    same = {"Origin": f"http://127.0.0.1:{api.port}", "Sec-Fetch-Site": "same-origin"}
    assert api.post(f"/v1/rewards/{rid}/redeem", auth="basic", headers=same)[0] == 200
    assert api.post("/v1/users/mallory/codes", {}, auth="bearer", headers={"Origin": "http://evil.example"})[0] == 200


def test_serve_refuses_a_bad_token_file_or_database(tmp, db):
    s = ApiServer(tmp, db.url)
    with open(s.token_file, "w") as f:
        f.write("short\n")
    p = subprocess.run(s.argv, capture_output=True, text=True, timeout=30)
    assert p.returncode == 1 and "16 to 512" in p.stderr
    s.argv[s.argv.index("--token-file") + 1] = tmp + "/missing"
    p = subprocess.run(s.argv, capture_output=True, text=True, timeout=30)
    assert p.returncode == 1 and "--token-file: cannot read" in p.stderr
    if db.backend == "sqlite":
        s2 = ApiServer(tmp, "sqlite://" + tmp + "/fresh.db")
        p = subprocess.run(s2.argv, capture_output=True, text=True, timeout=30)
        assert p.returncode == 1 and "referralctl migrate" in p.stderr


# ------------------------------------------------------------------ users

def test_user_summary(api, db, redis, stream):
    code = earn(db, redis, stream)
    status, _, alice = api.get("/v1/users/alice")
    assert status == 200
    assert alice == {"user": "alice", "code": code, "link": LINK_BASE + code, "referred_by": None,
                     "plan": "free", "rewards": {s: (2 if s == "available" else 0) for s in STATUSES}}
    status, _, bob = api.get("/v1/users/bob")
    assert status == 200 and bob["referred_by"] == "alice" and bob["plan"] == "free"
    assert bob["rewards"]["available"] == 1 and sum(bob["rewards"].values()) == 1
    # bob got a code of his own at signup (the worker creates it)
    assert bob["code"] == db.query("SELECT code FROM referral WHERE user_id = 'bob'")[0][0]
    # a redeemed reward moves between the counts
    first = reward_ids(db, "alice")[0]
    assert api.post(f"/v1/rewards/{first}/redeem")[0] == 200
    counts = api.get("/v1/users/alice")[2]["rewards"]
    assert (counts["available"], counts["redeemed"]) == (1, 1)


def test_user_summary_counts_every_status(api, db, redis, stream):
    earn(db, redis, stream, friends=[f"f{i}" for i in range(7)])
    for rid, st in zip(reward_ids(db, "alice"), STATUSES):
        db.query(f"UPDATE referral_reward SET status = '{st}' WHERE id = {rid}")
    assert api.get("/v1/users/alice")[2]["rewards"] == {st: 1 for st in STATUSES}
    s = api.get("/v1/stats?days=1")[2]
    assert s["totals"]["rewards"] == {st: (1 if st != "available" else 8) for st in STATUSES}
    assert s["daily"][0]["rewards"] == s["totals"]["rewards"]


def test_user_errors(api):
    status, _, body = api.get("/v1/users/nobody")
    assert status == 404 and body == {"error": "unknown user nobody"}
    for bad in ("a%20b", "a%3Bb", "x" * 129, "%00", "a%3Db", "%C3%A9"):
        for path in (f"/v1/users/{bad}", f"/v1/users/{bad}/rewards", f"/v1/users/{bad}/friends"):
            status, _, body = api.get(path)
            assert status == 400 and "bad user id" in body["error"], (path, body)
        status, _, body = api.post(f"/v1/users/{bad}/codes", {"label": ""})
        assert status == 400 and "bad user id" in body["error"]
    status, _, body = api.get("/v1/users/a%ZZ")
    assert status == 400 and "percent-encoding" in body["error"]
    status, _, body = api.get("/v1/users/" + "y" * 2000)
    assert status == 400 and "too long" in body["error"]


def test_user_rewards_as_referralctl_shows_them(api, db, redis, stream):
    earn(db, redis, stream)
    for user in ("alice", "bob", "carol"):
        status, _, body = api.get(f"/v1/users/{user}/rewards")
        assert status == 200
        assert body == ctl(db.url, "rewards", "--user", user, json_out=True, check=True)[1]
    assert len(api.get("/v1/users/alice/rewards")[2]["rewards"]) == 2
    status, _, body = api.get("/v1/users/nobody/rewards")
    assert status == 404 and "unknown user" in body["error"]


def test_friends(api, db, redis, stream):
    earn(db, redis, stream)
    status, _, body = api.get("/v1/users/alice/friends")
    assert status == 200 and [f["user"] for f in body["friends"]] == ["bob", "carol"]
    assert all(f["plan"] == "free" and f["joined_at"].endswith("Z") for f in body["friends"])
    assert api.get("/v1/users/bob/friends")[2]["friends"] == []
    assert api.get("/v1/users/nobody/friends")[0] == 404


def test_user_ids_with_an_encoded_slash(api, db):
    ctl(db.url, "code", "create", "--user", "team/alice", check=True)
    status, _, body = api.get("/v1/users/team%2Falice")
    assert status == 200 and body["user"] == "team/alice"
    assert api.get("/v1/users/team/alice")[0] == 404


# ------------------------------------------------------------------ codes

def test_create_codes(api, db):
    status, _, primary = api.post("/v1/users/dora/codes", {"label": ""})
    assert status == 200 and primary["created"] is True and primary["label"] == ""
    assert primary["link"] == LINK_BASE + primary["code"]
    assert primary["code"] == ctl(db.url, "code", "create", "--user", "dora", check=True)[1].split("\n")[0]
    # created only when missing; an empty body is the primary code
    status, _, again = api.post("/v1/users/dora/codes")
    assert status == 200 and again["created"] is False and again["code"] == primary["code"]
    status, _, tw = api.post("/v1/users/dora/codes", {"label": "twitter"})
    assert status == 200 and tw["created"] is True and tw["code"] != primary["code"]
    shown = ctl(db.url, "code", "show", "--user", "dora", json_out=True, check=True)[1]
    assert [(c["code"], c["label"]) for c in shown["codes"]] == [(primary["code"], ""), (tw["code"], "twitter")]
    assert db.count("SELECT count(*) FROM referral WHERE user_id = 'dora'") == 2


@pytest.mark.parametrize("raw,message", [
    (b"{", "not valid JSON"),
    (b"[]", "JSON object"),
    (b'"label"', "JSON object"),
    (b'{"label": 7}', "must be a string"),
    (b'{"label": null}', "must be a string"),
    (b'{"label": "' + b"x" * 65 + b'"}', "bad label"),
    (b'{"label": "a\\u0001b"}', "bad label"),
    (b'{"label": "a", "user": "mallory"}', "unknown key"),
    (b'{"label": "' + b"x" * 5000 + b'"}', "too large"),
    (b"\xff\xfe", "not valid JSON"),
])
def test_create_code_bad_bodies(api, db, raw, message):
    status, _, body = api.request("POST", "/v1/users/erin/codes", raw_body=raw,
                                  headers={"Content-Type": "application/json"})
    assert status == 400 and message in body["error"], body
    assert db.count("SELECT count(*) FROM referral WHERE user_id = 'erin'") == 0


# ---------------------------------------------------------------- redeem

def test_redeem(api, db, redis, stream):
    earn(db, redis, stream)
    rid = reward_ids(db, "alice")[0]
    status, _, reward = api.post(f"/v1/rewards/{rid}/redeem")
    assert status == 200
    assert reward["id"] == rid and reward["redeemed"] is True and reward["date_redeemed"]
    assert reward == [w for w in ctl(db.url, "rewards", "--user", "alice", json_out=True, check=True)[1]["rewards"]
                      if w["id"] == rid][0]
    assert reward["status"] == "redeemed"
    status, _, body = api.post(f"/v1/rewards/{rid}/redeem")
    assert status == 409 and "cannot be redeemed: it was already redeemed on" in body["error"]
    assert body["reward"]["id"] == rid and body["reward"]["status"] == "redeemed"
    # referralctl agrees it is taken
    assert ctl(db.url, "redeem", str(rid))[0] == 1
    # only an available reward can be redeemed: review, pending, reversed ... answer 409 and stay
    other = reward_ids(db, "alice")[1]
    for st, words in (("review", "is in review"), ("reversed", "was reversed"), ("rejected", "was rejected"),
                      ("paid", "already paid")):
        db.query(f"UPDATE referral_reward SET status = '{st}' WHERE id = {other}")
        status, _, body = api.post(f"/v1/rewards/{other}/redeem")
        assert status == 409 and words in body["error"], body
        assert db.query(f"SELECT status FROM referral_reward WHERE id = {other}") == [(st,)]
    db.query(f"UPDATE referral_reward SET status = 'available' WHERE id = {other}")
    assert api.post(f"/v1/rewards/{other}/redeem")[0] == 200

def test_redeem_tells_the_application_by_webhook(tmp, db, redis, stream):
    """A redeem through the API is the lifecycle's: the config's webhooks
    get reward.redeemed, queued in the same transaction."""
    with open(tmp + "/hook.secret", "w") as f:
        f.write("whsec_test_secret_0123456789\n")
    hook = f"""
[[webhook]]
url = "http://127.0.0.1:1/hooks/referral"
secret_file = "{tmp}/hook.secret"
events = ["reward.redeemed"]
"""
    earn(db, redis, stream)
    rid = reward_ids(db, "alice")[0]
    s = ApiServer(tmp, db.url, redis_url=redis.url, stream=stream, extra_config=hook).start()
    try:
        assert s.post(f"/v1/rewards/{rid}/redeem")[0] == 200
        assert s.post(f"/v1/rewards/{rid}/redeem")[0] == 409
    finally:
        s.stop()
    rows = db.query("SELECT reward_id, target, operation, endpoint, state FROM referral_delivery")
    assert rows == [(str(rid), "webhook", "reward.redeemed", "http://127.0.0.1:1/hooks/referral", "queued")]
    payload = db.query("SELECT payload FROM referral_delivery")[0][0]
    body = json.loads(payload)
    assert body["type"] == "reward.redeemed" and body["data"]["object"]["id"] == rid
    assert body["data"]["object"]["status"] == "redeemed"


def test_redeem_errors(api):
    status, _, body = api.post("/v1/rewards/999999/redeem")
    assert status == 404 and body == {"error": "no reward with id 999999"}
    for bad in ("0", "-1", "abc", "1.5", "99999999999999999999", "%20"):
        status, _, body = api.post(f"/v1/rewards/{bad}/redeem")
        assert status == 400 and "bad reward id" in body["error"], bad
    status, headers, body = api.get("/v1/rewards/1/redeem")
    assert status == 405 and headers["allow"] == "POST"


def test_concurrent_redeems_give_one_200_and_one_409(api, db, redis, stream):
    earn(db, redis, stream, referrer="alice", friends=[f"f{i}" for i in range(6)])
    ids = reward_ids(db, "alice")
    assert len(ids) == 6
    for rid in ids:
        barrier = threading.Barrier(2)
        results = []

        def redeem():
            barrier.wait()
            results.append(api.post(f"/v1/rewards/{rid}/redeem")[0])
        threads = [threading.Thread(target=redeem) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == [200, 409], (rid, results)
    assert db.count("SELECT count(*) FROM referral_reward WHERE user_id = 'alice' AND status = 'redeemed'") == 6
    assert db.count("SELECT count(*) FROM referral_reward WHERE user_id = 'alice' AND redeemed") == 6


# ----------------------------------------------------------------- stats

def test_stats(api, db, redis, stream):
    earn(db, redis, stream)
    earn(db, redis, stream, referrer="zoe", friends=["yan"])
    status, _, s = api.get("/v1/stats?days=7")
    assert status == 200
    today = datetime.datetime.now(datetime.timezone.utc).date()
    assert s["days"] == 7 and s["to"] == today.isoformat()
    assert s["from"] == (today - datetime.timedelta(days=6)).isoformat()
    assert [d["date"] for d in s["daily"]] == [(today - datetime.timedelta(days=6 - i)).isoformat()
                                              for i in range(7)]
    clicks = db.count("SELECT count(*) FROM referral_response WHERE action = 'click'")
    signups = db.count("SELECT count(*) FROM referral_user WHERE referral_id IS NOT NULL")
    rewards = db.count("SELECT count(*) FROM referral_reward")
    assert (clicks, signups, rewards) == (3, 3, 6)
    t = s["totals"]
    assert (t["clicks"], t["signups"], t["subscriptions"]) == (clicks, signups, 0)
    assert t["rewards"] == {st: (rewards if st == "available" else 0) for st in STATUSES}
    assert sum(d["clicks"] for d in s["daily"]) == clicks and s["daily"][-1]["clicks"] == clicks
    assert [(r["user"], r["clicks"], r["signups"], r["rewards"]) for r in s["referrers"]] == \
        [("alice", 2, 2, 2), ("zoe", 1, 1, 1)]
    assert [r["user"] for r in api.get("/v1/stats?days=1&top=1")[2]["referrers"]] == ["alice"]
    assert len(api.get("/v1/stats")[2]["daily"]) == 30


def test_stats_counts_subscriptions_once_per_user_on_their_day(api, db, redis, stream):
    code = earn(db, redis, stream)
    c = redis.client()
    old = int((datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=3)).timestamp() * 1000)
    for ts in (old, None):  # carol subscribes twice: three days ago and now
        c.cmd(*xadd_args(stream, event_fields("conversion", code=code, action="subscribe", user="carol",
                                              amount="999", currency="usd", order=uuid.uuid4().hex, ts=ts)))
    c.close()
    run_worker(db, redis, stream)
    s = api.get("/v1/stats?days=7")[2]
    assert s["totals"]["subscriptions"] == 1 and s["daily"][3]["subscriptions"] == 1
    assert api.get("/v1/stats?days=2")[2]["totals"]["subscriptions"] == 0   # before the period
    assert s["referrers"][0]["user"] == "alice" and s["referrers"][0]["subscriptions"] == 1


@pytest.mark.parametrize("query", ["days=0", "days=367", "days=x", "days=", "days=-1", "top=0", "top=101",
                                   "days=1e3"])
def test_stats_bad_parameters(api, query):
    status, _, body = api.get(f"/v1/stats?{query}")
    assert status == 400 and "expected an integer" in body["error"]


def test_unknown_endpoints_and_methods(api):
    for path in ("/v1", "/v1/users", "/v1/users/alice/nope", "/v1/rewards/1", "/v2/stats", "/assets/nope.js"):
        status, _, body = api.get(path)
        assert status == 404 and "no such endpoint" in body["error"], path
    status, headers, body = api.request("DELETE", "/v1/users/alice")
    assert status == 405 and headers["allow"] == "GET"
    status, headers, _ = api.post("/v1/stats")
    assert status == 405 and headers["allow"] == "GET"


# ------------------------------------------------------------ deliveries

def add_delivery(db, state, error, reward_id=None, attempts=3, age_s=0, target="webhook", op="reward.created"):
    at = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=age_s)).strftime(
        "%Y-%m-%d %H:%M:%S.000000")
    rid = "NULL" if reward_id is None else str(reward_id)
    err = "NULL" if error is None else "'" + error.replace("'", "''") + "'"
    db.query("INSERT INTO referral_delivery (reward_id, target, operation, endpoint, state, attempts,"
             " next_attempt_at, last_error, created_at)"
             f" VALUES ({rid}, '{target}', '{op}', 'http://127.0.0.1:1/hook', '{state}', {attempts},"
             f" '{at}', {err}, '{at}')")


def test_failing_deliveries(api, db, redis, stream):
    earn(db, redis, stream)
    rid = reward_ids(db, "alice")[0]
    add_delivery(db, "dead", "HTTP 500 from http://127.0.0.1:1/hook <b>boom</b>", rid)
    add_delivery(db, "queued", "connect: Connection refused", None, attempts=1, op="referral.linked")
    add_delivery(db, "queued", None, rid, attempts=0)              # not failing (yet)
    add_delivery(db, "done", "an old error", rid, attempts=2)      # delivered in the end
    status, _, body = api.get("/v1/deliveries/failing")
    assert status == 200
    got = [(d["state"], d["reward_id"], d["operation"], d["attempts"], d["last_error"]) for d in body["deliveries"]]
    assert got == [("queued", None, "referral.linked", 1, "connect: Connection refused"),
                   ("dead", rid, "reward.created", 3, "HTTP 500 from http://127.0.0.1:1/hook <b>boom</b>")]
    assert all(d["created_at"].endswith("Z") for d in body["deliveries"])
    assert len(api.get("/v1/deliveries/failing?limit=1")[2]["deliveries"]) == 1
    for bad in ("0", "201", "x"):
        assert api.get(f"/v1/deliveries/failing?limit={bad}")[0] == 400


def test_metrics_deliveries(api, db):
    add_delivery(db, "queued", None, age_s=120)
    add_delivery(db, "queued", "timeout", age_s=30)
    add_delivery(db, "dead", "HTTP 400", age_s=600)
    add_delivery(db, "done", None, age_s=9000)
    m = metrics(api)
    assert m['referral_deliveries{state="queued"}'] == 2 and m['referral_deliveries{state="dead"}'] == 1
    # the oldest queued one is 120 s old (plus the time the test took)
    assert 120 <= m["referral_delivery_oldest_queued_age_seconds"] < 600


# --------------------------------------------------------------- metrics

def test_metrics_from_redis_and_the_database(api, db, redis, stream):
    earn(db, redis, stream)
    m = metrics(api)
    assert m["referral_redis_up"] == 1 and m["referral_database_up"] == 1
    c = redis.client()
    assert m["referral_stream_length"] == c.cmd("XLEN", stream) == 4
    group = '{group="referral-workers"}'
    assert m[f"referral_consumer_group_lag{group}"] == 0
    assert m[f"referral_consumer_group_pending{group}"] == 0
    # `referral-worker --once` leaves no consumer behind: nobody is reading
    assert m[f"referral_consumer_group_consumers{group}"] == 0
    assert math.isnan(m[f"referral_consumer_group_min_idle_seconds{group}"])
    # three new events the worker has not read yet: the lag grows
    for _ in range(3):
        c.cmd(*xadd_args(stream, event_fields("click", code="nope")))
    # two read by a consumer that never acknowledges them: pending
    c.cmd("XREADGROUP", "GROUP", "referral-workers", "stuck", "COUNT", "2", "STREAMS", stream, ">")
    c.close()
    m = metrics(api)
    assert m["referral_stream_length"] == 7
    assert m[f"referral_consumer_group_lag{group}"] == 1
    assert m[f"referral_consumer_group_pending{group}"] == 2
    assert m[f"referral_consumer_group_consumers{group}"] == 1
    assert m[f"referral_consumer_group_min_idle_seconds{group}"] >= 0
    assert m['referral_rewards{status="available"}'] == 4
    db.query("UPDATE referral_reward SET status = 'review', reason = 'daily_cap' WHERE id IN"
             " (SELECT min(id) FROM referral_reward)")
    m = metrics(api)
    for st in STATUSES:
        assert m[f'referral_rewards{{status="{st}"}}'] == \
            db.count(f"SELECT count(*) FROM referral_reward WHERE status = '{st}'"), st
    assert m['referral_rewards{status="review"}'] == 1
    assert m['referral_deliveries{state="queued"}'] == 0 and m['referral_deliveries{state="dead"}'] == 0
    assert m["referral_delivery_oldest_queued_age_seconds"] == 0


def test_metrics_when_redis_is_down(tmp, db):
    s = ApiServer(tmp, db.url, redis_url="redis://127.0.0.1:1").start()
    try:
        m = metrics(s)
        assert m["referral_redis_up"] == 0 and m["referral_database_up"] == 1
        assert "referral_stream_length" not in m
    finally:
        s.stop()


# ------------------------------------------------------- link_base in ctl

def test_referralctl_prints_the_link_with_link_base(db, tmp):
    s = ApiServer(tmp, db.url)
    rc, out, err = ctl(db.url, "--config", s.config, "code", "create", "--user", "gus")
    assert rc == 0, err
    code, link = out.strip().split("\n")
    assert link == LINK_BASE + code
    rc, j, _ = ctl(db.url, "--config", s.config, "code", "show", "--user", "gus", json_out=True)
    assert j["codes"][0]["link"] == LINK_BASE + code
    rc, out, _ = ctl(db.url, "--config", s.config, "code", "show", "--user", "gus")
    assert LINK_BASE + code in out
    # without link_base: the code alone, and a null link
    rc, out, _ = ctl(db.url, "code", "create", "--user", "gus")
    assert out.strip() == code
    assert ctl(db.url, "code", "create", "--user", "gus", json_out=True)[1]["link"] is None
    with open(tmp + "/bad.toml", "w") as f:
        f.write('link_base = "javascript:alert(1)"\n')
    rc, _, err = ctl(db.url, "--config", tmp + "/bad.toml", "code", "show", "--user", "gus")
    assert rc == 2 and "bad.toml:1" in err and "link_base" in err
