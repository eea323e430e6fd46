"""`referral_redis SENTINEL... sentinel=NAME` (issue 10, SPEC
`referral_redis`): the module asks the Sentinels, in order, for the primary
on every (re)connect; a failover under traffic (the primary killed) fails no
request and loses no event. With `replicas=1` an event counts as sent only
once the replica holds it, so the primary's death cannot take an
acknowledged event with it."""

import time

import pytest

from harness import (ClickTraffic, Nginx, RedisClient, SentinelSet, echoed, dead_port, http_request,
                     module_http, referral_status, wait_until)


@pytest.fixture
def sentinels():
    s = SentinelSet().start()
    yield s
    s.close()


def stream_visitors(port):
    c = RedisClient(port)
    try:
        return {f["visitor"] for _, f in c.stream("referral:events")}
    finally:
        c.close()


def sentinel_addrs(s, dead_first=True):
    # A Sentinel that is down comes first: the next one is asked.
    addrs = [f"127.0.0.1:{dead_port()}"] if dead_first else []
    return " ".join(addrs + [f"127.0.0.1:{p}" for p, _, _ in s.sentinels])


def test_failover_under_traffic_fails_nothing_and_loses_nothing(make_nginx, sentinels):
    s = sentinels
    n = make_nginx(module_http(f"{sentinel_addrs(s)} sentinel={s.SERVICE} replicas=1",
                               http="    referral_spool {dir}/spool;"), workers=2)
    traffic = ClickTraffic(n.port, "failover", pause=0.002, max_elapsed=2.0).start()
    try:
        time.sleep(1.5)
        old = s.primary_port()
        new = s.fail_over()
        assert new != old
        # The old primary comes back; the Sentinels make it the new one's
        # replica, and what waited for a replica is confirmed.
        victim = s.primary if s.primary.port == old else s.replica
        victim.start()
        time.sleep(2.0)
    finally:
        traffic.stop()
    assert not traffic.failures, f"{len(traffic.failures)} failed requests: {traffic.failures[:5]}"
    assert traffic.visitors
    ok = wait_until(lambda: (lambda st: st["buffered"] == 0 and st["replayed"] == st["spooled"]
                             and st["redis"] == "connected")(referral_status(n.port)), timeout=40)
    assert ok, referral_status(n.port)
    missing = set(traffic.visitors) - stream_visitors(new)
    assert not missing, f"{len(missing)} of {len(traffic.visitors)} clicks are not on the new primary"
    st = referral_status(n.port)
    assert st["dropped"] == 0, st
    assert st["sent"] >= len(traffic.visitors), st
    assert f"127.0.0.1:{new} as the primary" in n.log()
    print(f"{len(traffic.visitors)} clicks through a failover, status {st}")


def test_first_sentinel_down_the_next_is_asked(make_nginx, sentinels):
    s = sentinels
    n = make_nginx(module_http(f"{sentinel_addrs(s)} sentinel={s.SERVICE}"))
    visitors = [echoed(http_request(n.port, f"/?ref=ask_{i}"))["visitor"] for i in range(10)]
    assert wait_until(lambda: referral_status(n.port)["sent"] == 10), referral_status(n.port)
    assert set(visitors) <= stream_visitors(s.primary_port())


def test_unknown_service_is_an_outage_not_a_failure(make_nginx, sentinels):
    s = sentinels
    n = make_nginx(module_http(f"{sentinel_addrs(s, dead_first=False)} sentinel=nosuch",
                               http="    referral_spool {dir}/spool;"))
    for i in range(5):
        assert http_request(n.port, f"/?ref=nosuch_{i}").status == 200
    assert wait_until(lambda: referral_status(n.port)["spooled"] == 5), referral_status(n.port)
    assert "no Sentinel named the primary" in n.log()


@pytest.mark.parametrize("args,message", [
    ("127.0.0.1:1 sentinel=", 'invalid value "sentinel=" in "referral_redis" directive'),
    ("unix:/tmp/s.sock sentinel=x", 'a Sentinel must be host:port'),
    ("127.0.0.1:1 127.0.0.1:2", 'takes one address, or Sentinels with sentinel=NAME'),
])
def test_bad_sentinel_settings_fail_nginx_t(module_built, args, message):
    n = Nginx(module_http(args))
    try:
        code, out = n.test_config()
    finally:
        n.close()
    assert code != 0 and message in out, out
