"""The whole two-sided flow through the real stack: Debian's nginx with the
module, a proxied backend that reports conversions, Redis, referral-worker and
referralctl, on SQLite and on PostgreSQL (issue 3, "the whole two-sided flow
through nginx")."""

import subprocess
import time

import pytest

from harness import (WORKER, MainDb, Nginx, RedisServer, ctl, free_port, http_request,
                     referral_edge)


@pytest.fixture(params=["sqlite", "postgresql"])
def stack(request, tmp):
    """nginx :port (referral on, proxying to a demo backend that answers
    /signup and /subscribe with the conversion header), Redis, a migrated
    main database and a running worker."""
    redis = RedisServer().start()
    pg = request.getfixturevalue("pg") if request.param == "postgresql" else None
    db = MainDb(request.param, tmp, pg)
    ctl(db.url, "migrate", check=True)
    backend = free_port()
    nginx = Nginx(f"""
    {referral_edge(redis.port, backend)}
    server {{
        listen 127.0.0.1:{backend};
        location = /signup {{
            add_header X-Referral-Conversion "signup; user=$arg_user" always;
            return 200 "code=$http_x_referral_code";
        }}
        location = /subscribe {{
            add_header X-Referral-Conversion "subscribe; user=$arg_user; amount=999; currency=usd; order=o_$arg_user" always;
            return 200 "code=$http_x_referral_code";
        }}
        location / {{ return 200 "home code=$http_x_referral_code"; }}
    }}
""").start()
    worker = subprocess.Popen([WORKER, "--redis", redis.url, "--database", db.url],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    class Stack:
        pass
    s = Stack()
    s.nginx, s.redis, s.db, s.worker = nginx, redis, db, worker
    yield s
    worker.terminate()
    _, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    nginx.assert_clean_log()
    nginx.close()
    redis.close()


class Browser:
    """One visitor: keeps the attribution cookie like a browser would."""

    def __init__(self, port):
        self.port = port
        self.cookie = None

    def get(self, target):
        headers = [("Cookie", f"referral={self.cookie}")] if self.cookie else []
        r = http_request(self.port, target, headers)
        c = r.cookie()
        if c is not None:
            self.cookie = c.value
        assert r.status in (200, 302), r
        return r


def rewards(db_url, user):
    return ctl(db_url, "rewards", "--user", user, json_out=True, check=True)[1]["rewards"]


def wait_rewards(db_url, user, n, timeout=15.0):
    deadline = time.time() + timeout
    got = rewards(db_url, user)
    while len(got) < n and time.time() < deadline:
        time.sleep(0.1)
        got = rewards(db_url, user)
    return got


def test_click_signup_subscribe_credits_both_sides(stack):
    port = stack.nginx.port
    code = ctl(stack.db.url, "code", "create", "--user", "alice", check=True)[1].strip()

    # bob follows alice's short link, then signs up: alice is on the free
    # plan, so both get 7 extra trial days
    bob = Browser(port)
    r = bob.get(f"/r/{code}")
    assert r.status == 302 and bob.cookie
    assert bob.get("/signup?user=bob").body == f"code={code}"
    got = wait_rewards(stack.db.url, "alice", 1)
    assert [(w["label"], w["role"], w["referred_user"]) for w in got] == \
        [("7 extra trial days", "referrer", "bob")]
    assert [(w["label"], w["role"]) for w in rewards(stack.db.url, "bob")] == \
        [("7 extra trial days", "referee")]

    # alice pays (no attribution of her own); carol arrives by ?ref= and
    # subscribes: $10.00 each, and no trial days since alice is now paid
    assert Browser(port).get("/subscribe?user=alice").body == "code="
    carol = Browser(port)
    carol.get(f"/?ref={code}")
    carol.get("/signup?user=carol")
    carol.get("/subscribe?user=carol")
    got = wait_rewards(stack.db.url, "alice", 2)
    assert [(w["label"], w["referred_user"]) for w in got] == \
        [("7 extra trial days", "bob"), ("$10.00 credit", "carol")]
    assert [w["label"] for w in rewards(stack.db.url, "carol")] == ["$10.00 credit"]

    # the application redeems alice's credit once
    credit = got[1]["id"]
    status, _, _ = ctl(stack.db.url, "redeem", str(credit))
    assert status == 0
    status, out, err = ctl(stack.db.url, "redeem", str(credit))
    assert status == 1 and "already redeemed" in (out + err)

    stats = ctl(stack.db.url, "stats", json_out=True, check=True)[1]
    row = [s for s in stats["referrers"] if s["user"] == "alice"][0]
    assert (row["clicks"], row["signups"], row["subscriptions"], row["rewards"]) == (2, 2, 1, 2)


def test_a_friend_without_the_cookie_is_not_credited(stack):
    port = stack.nginx.port
    code = ctl(stack.db.url, "code", "create", "--user", "dora", check=True)[1].strip()
    Browser(port).get(f"/?ref={code}")           # clicks, but ...
    Browser(port).get("/signup?user=erin")        # ... signs up in another browser
    Browser(port).get("/signup?user=dora")        # the referrer's own signup
    time.sleep(2)
    assert rewards(stack.db.url, "dora") == []
    assert rewards(stack.db.url, "erin") == []
