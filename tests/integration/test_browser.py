"""The dashboard and the demo's invite page in Debian's headless Chromium,
against a real stack (nginx with the module, the demo application of
nginx.conf.example, Redis, referral-worker, referralctl serve) after a
scripted referral flow: the figures shown are checked against the
database, the page must log no console error, untrusted text must stay
text, and full-page screenshots go to build/artifacts/."""

import base64
import os
import subprocess
import time

import pytest

from api_harness import ApiServer
from browser import Chromium
from harness import (BUILD_DIR, SOURCE_DIR, WORKER, MainDb, Nginx, RedisServer, ctl, free_port, http_request,
                     referral_edge)

ARTIFACTS = os.path.join(BUILD_DIR, "artifacts")
STATUSES = ["pending", "review", "available", "paid", "redeemed", "reversed", "rejected"]
EVIL = "<img src=x onerror=alert(1)>"


def demo_server(backend, api_port, token):
    """The demo application of nginx.conf.example (its server{} and maps), on `backend`,
    with its pages from the source tree and the API token inline."""
    text = open(os.path.join(SOURCE_DIR, "nginx.conf.example")).read()
    at = text.index("listen 127.0.0.1:8081;")
    server = text.rindex("server {", 0, at)
    # with what the example puts before it for it (its maps), after the comment that introduces it
    start = text.rindex("# A demo application", 0, server)
    depth, i = 0, server
    while True:
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                break
        i += 1
    block = text[start:i + 1]
    block = block.replace("127.0.0.1:8081", f"127.0.0.1:{backend}")
    block = block.replace("127.0.0.1:8082", f"127.0.0.1:{api_port}")
    block = block.replace("root demo;", f"root {SOURCE_DIR}/demo;")
    assert "include run/api-auth.conf;" in block
    block = block.replace("include run/api-auth.conf;", f'proxy_set_header Authorization "Bearer {token}";')
    return block


@pytest.fixture(params=["sqlite", "postgresql"])
def stack(request, tmp):
    redis = RedisServer().start()
    pg = request.getfixturevalue("pg") if request.param == "postgresql" else None
    db = MainDb(request.param, tmp, pg)
    ctl(db.url, "migrate", check=True)
    # serve first (the demo proxies to it); link_base points at this nginx
    nginx = Nginx("")  # only to reserve its directory and port
    api = ApiServer(tmp, db.url, redis_url=redis.url, link_base=f"http://127.0.0.1:{nginx.port}/r/").start()
    backend = free_port()
    nginx.write(f"""
    {referral_edge(redis.port, backend)}
    {demo_server(backend, api.port, api.token)}
""")
    nginx.start()
    worker = subprocess.Popen([WORKER, "--redis", redis.url, "--database", db.url],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    browser = Chromium().start()

    class Stack:
        pass
    s = Stack()
    s.backend, s.db, s.nginx, s.api, s.browser, s.redis = request.param, db, nginx, api, browser, redis
    yield s
    print("referralctl serve's log:\n" + open(api.log_path).read()[-3000:])  # shown when a test fails
    browser.close()
    worker.terminate()
    _, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    api.stop()
    nginx.stop()
    nginx.assert_clean_log()
    nginx.close()
    redis.close()


class Visitor:
    """One browser of the scripted flow (plain HTTP, keeps the cookie)."""

    def __init__(self, port):
        self.port, self.cookie = port, None

    def get(self, target):
        r = http_request(self.port, target, [("Cookie", f"referral={self.cookie}")] if self.cookie else [])
        c = r.cookie()
        if c is not None:
            self.cookie = c.value
        assert r.status in (200, 302), r
        return r


def wait_for(predicate, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


def referral_flow(s):
    """alice (free) invites bob (signs up: 7 days each), pays, invites carol
    (subscribes: $10 each) and dan (signs up only); a user whose id is
    markup has a click too. One of alice's rewards is redeemed."""
    port = s.nginx.port
    code = s.api.post("/v1/users/alice/codes", {"label": ""})[2]["code"]
    bob = Visitor(port)
    bob.get(f"/r/{code}")
    bob.get("/signup?user=bob")
    wait_for(lambda: s.db.count("SELECT count(*) FROM referral_reward WHERE user_id = 'alice'") == 1)
    Visitor(port).get("/subscribe?user=alice")
    wait_for(lambda: s.db.count("SELECT count(*) FROM referral_user WHERE user_id = 'alice' AND plan = 'paid'") == 1)
    carol = Visitor(port)
    carol.get(f"/?ref={code}")
    carol.get("/signup?user=carol")
    carol.get("/subscribe?user=carol")
    dan = Visitor(port)
    dan.get(f"/r/{code}")
    dan.get("/signup?user=dan")
    evil_code = s.api.post("/v1/users/%3Cb%3Eeve%3C%2Fb%3E/codes", {"label": ""})[2]["code"]
    Visitor(port).get(f"/r/{evil_code}")
    wait_for(lambda: s.db.count("SELECT count(*) FROM referral_reward WHERE user_id = 'alice'") == 2
             and s.db.count("SELECT count(*) FROM referral_user WHERE referral_id IS NOT NULL") == 3
             and s.db.count("SELECT count(*) FROM referral_response WHERE action = 'click'") == 4)
    first = s.db.query("SELECT min(id) FROM referral_reward WHERE user_id = 'alice'")[0][0]
    assert s.api.post(f"/v1/rewards/{first}/redeem")[0] == 200
    return code


def status_counts(db, user=None):
    where = f" AND user_id = '{user}'" if user else ""
    redeemed = db.count("SELECT count(*) FROM referral_reward WHERE redeemed" + where)
    total = db.count("SELECT count(*) FROM referral_reward WHERE 1 = 1" + where)
    return {st: {"redeemed": redeemed, "available": total - redeemed}.get(st, 0) for st in STATUSES}


def text_of(b, selector):
    return b.eval(f"document.querySelector({selector!r}).textContent")


def test_dashboard_shows_the_database(stack):
    s, b = stack, stack.browser
    referral_flow(s)
    # a webhook delivery that died, with markup in its error (untrusted: it
    # comes from the remote end), and one retrying in an hour (so that the
    # running worker leaves it alone)
    rid = s.db.query("SELECT min(id) FROM referral_reward")[0][0]
    now = time.strftime("%Y-%m-%d %H:%M:%S.000000", time.gmtime())
    later = time.strftime("%Y-%m-%d %H:%M:%S.000000", time.gmtime(time.time() + 3600))
    for state, attempts, error, due in (("dead", 20, "HTTP 500: " + EVIL, now),
                                        ("queued", 2, "connect: Connection refused", later)):
        s.db.query("INSERT INTO referral_delivery (reward_id, target, operation, endpoint, state, attempts,"
                   f" next_attempt_at, last_error, created_at) VALUES ({rid}, 'webhook', 'reward.created',"
                   f" 'http://127.0.0.1:1/hook', '{state}', {attempts}, '{due}', '{error}', '{now}')")
    auth = base64.b64encode(f"growth:{s.api.token}".encode()).decode()
    b.headers({"Authorization": "Basic " + auth})
    b.open(f"http://127.0.0.1:{s.api.port}/")
    b.wait_for("document.body.dataset.ready === '30'")
    assert b.eval("getComputedStyle(document.querySelector('.card')).borderRadius") == "8px"  # the stylesheet applied
    db = s.db
    clicks = db.count("SELECT count(*) FROM referral_response WHERE action = 'click'")
    signups = db.count("SELECT count(*) FROM referral_user WHERE referral_id IS NOT NULL")
    subscriptions = db.count("SELECT count(DISTINCT user_id) FROM referral_response WHERE action = 'subscribe'")
    assert (clicks, signups, subscriptions) == (4, 3, 1)
    assert text_of(b, "#funnel-clicks") == str(clicks)
    assert text_of(b, "#funnel-signups") == str(signups)
    assert text_of(b, "#funnel-subscriptions") == str(subscriptions)
    # the daily chart holds 30 days, today's bars carry every click
    assert b.eval("Chart.getChart('daily-chart').data.labels.length") == 30
    assert b.eval("Chart.getChart('daily-chart').data.datasets[0].data.reduce((a, b) => a + b, 0)") == clicks
    # top referrers, best first, against the database
    rows = b.eval("[...document.querySelectorAll('#referrers tr')].map(r => [...r.cells].map(c => c.textContent))")
    alice_rewards = db.count("SELECT count(*) FROM referral_reward WHERE user_id = 'alice' AND role = 'referrer'")
    assert rows == [["alice", "3", "3", "1", str(alice_rewards)], ["<b>eve</b>", "1", "0", "0", "0"]]
    # markup in a user id stays text
    assert b.eval("document.querySelectorAll('#referrers b, #referrers img').length") == 0
    # rewards by status
    shown = b.eval("Object.fromEntries([...document.querySelectorAll('#rewards tr')]"
                   ".map(r => [r.dataset.status, Number(r.cells[1].textContent)]))")
    assert shown == status_counts(db)
    assert shown["redeemed"] == 1 and shown["available"] == 3
    # failing deliveries with their error, as text
    failing = b.eval("[...document.querySelectorAll('#deliveries tr')].map(r => [r.cells[4].textContent,"
                     " r.cells[5].textContent, r.cells[6].textContent])")
    assert failing == [["queued", "2", "connect: Connection refused"], ["dead", "20", "HTTP 500: " + EVIL]]
    assert b.eval("document.querySelectorAll('#deliveries img').length") == 0
    # another period reloads the figures
    b.eval("document.getElementById('period').value = '7';"
           "document.getElementById('period').dispatchEvent(new Event('change'))")
    b.wait_for("document.body.dataset.ready === '7'")
    assert b.eval("Chart.getChart('daily-chart').data.labels.length") == 7
    b.eval("document.getElementById('period').value = '30';"
           "document.getElementById('period').dispatchEvent(new Event('change'))")
    b.wait_for("document.body.dataset.ready === '30'")
    b.pump(0.5)
    assert b.errors == []
    b.screenshot(os.path.join(ARTIFACTS, f"dashboard-{s.backend}.png"))


def test_invite_page_reads_the_api(stack):
    s, b = stack, stack.browser
    code = referral_flow(s)
    # the demo's home page links to the invite page
    b.open(f"http://127.0.0.1:{s.nginx.port}/")
    b.wait_for("document.getElementById('invite-link') !== null")
    assert b.eval("document.getElementById('invite-link').getAttribute('href')") == "/invite?user=alice"
    b.screenshot(os.path.join(ARTIFACTS, f"demo-home-{s.backend}.png"))
    b.eval("document.getElementById('invite-link').click()")
    b.wait_for("document.body.dataset.ready === '1'")
    assert b.eval("location.pathname + location.search") == "/invite?user=alice"
    # the stylesheet applied (served as text/css)
    assert b.eval("getComputedStyle(document.querySelector('.hero')).backgroundColor") == "rgb(238, 244, 255)"
    assert b.eval("document.getElementById('link').value") == f"http://127.0.0.1:{s.nginx.port}/r/{code}"
    friends = b.eval("[...document.querySelectorAll('#friends tr')].map(r => r.dataset.user)")
    in_db = [r[0] for r in s.db.query(
        "SELECT u.user_id FROM referral_user u JOIN referral r ON r.id = u.referral_id"
        " WHERE r.user_id = 'alice' ORDER BY u.referred_at, u.user_id")]
    assert friends == in_db == ["bob", "carol", "dan"]
    assert text_of(b, "#friends-count") == "3"
    rewards = b.eval("[...document.querySelectorAll('#rewards tr')].map(r => [r.dataset.id, r.cells[0].textContent,"
                     " r.cells[3].dataset.status])")
    in_db = s.db.query("SELECT id, kind, redeemed FROM referral_reward WHERE user_id = 'alice' ORDER BY id")
    assert [int(r[0]) for r in rewards] == [int(r[0]) for r in in_db]
    assert [r[1] for r in rewards] == ["7 extra trial days", "$10.00 credit"]
    assert [r[2] for r in rewards] == ["redeemed", "available"]
    assert text_of(b, "#rewards-count") == "2" and text_of(b, "#available-count") == "1"
    b.pump(0.5)
    assert b.errors == []
    b.screenshot(os.path.join(ARTIFACTS, f"invite-{s.backend}.png"))

    # a user without a link gets one on their first visit; markup stays text
    b.open(f"http://127.0.0.1:{s.nginx.port}/invite?user=%3Cimg%3Ezed")
    b.wait_for("document.body.dataset.ready === '1'")
    made = s.db.query("SELECT code FROM referral WHERE user_id = '<img>zed'")
    assert len(made) == 1
    assert b.eval("document.getElementById('link').value").endswith("/r/" + made[0][0])
    assert text_of(b, "#who") == "Signed in as <img>zed"
    assert b.eval("document.querySelectorAll('nav img, main img').length") == 0
    assert text_of(b, "#friends-count") == "0"
    b.pump(0.3)
    assert b.errors == []
