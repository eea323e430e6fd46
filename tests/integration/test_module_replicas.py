"""`referral_redis ... replicas=N` (issue 10, SPEC `referral_redis`): an
event counts as sent only once WAIT reports that N replicas hold it; with
the replica stopped, events wait in memory (`buffered`), requests are not
held up, and they flow once the replica is back."""

import time

from harness import (RedisServer, echoed, http_request, referral_status, wait_until)


def replica_of(primary):
    return RedisServer().start("--replicaof", "127.0.0.1", str(primary.port))


def link_up(replica):
    c = replica.client()
    try:
        return "master_link_status:up" in c.cmd("INFO", "replication")
    finally:
        c.close()


def clicks(n, prefix, count):
    visitors = []
    for i in range(count):
        r = http_request(n.port, f"/?ref={prefix}_{i}")
        assert r.status == 200 and r.elapsed < 2.0, r
        visitors.append(echoed(r)["visitor"])
    return visitors


def visitors_in(server):
    c = server.client()
    try:
        return {f["visitor"] for _, f in c.stream("referral:events")}
    finally:
        c.close()


def test_events_wait_for_the_replica_then_flow(edge, redis):
    replica = replica_of(redis)
    try:
        assert wait_until(lambda: link_up(replica), timeout=15)
        n = edge(redis_addr=f"127.0.0.1:{redis.port} replicas=1")
        first = clicks(n, "before", 20)
        assert wait_until(lambda: referral_status(n.port)["sent"] == 20), referral_status(n.port)
        assert set(first) <= visitors_in(replica), "sent means the replica has it"

        replica.stop()
        second = clicks(n, "during", 20)
        # The primary stored them, but they are not acknowledged: buffered.
        assert wait_until(lambda: set(second) <= visitors_in(redis))
        time.sleep(2.5)  # a few WAITs come back short
        s = referral_status(n.port)
        assert s["sent"] == 20 and s["buffered"] == 20 and s["dropped"] == 0, s
        assert "of 1 replica(s) confirmed" in n.log()

        replica.start("--replicaof", "127.0.0.1", str(redis.port))
        assert wait_until(lambda: (lambda s: s["sent"] == 40 and s["buffered"] == 0)(
            referral_status(n.port)), timeout=30), referral_status(n.port)
        assert set(first + second) <= visitors_in(replica)
    finally:
        replica.close()


def test_replicas_pipeline_many_events(edge, redis):
    """One WAIT covers a pipeline of XADDs: a burst from parallel clients is
    confirmed as a whole, all of it acknowledged."""
    import threading
    replica = replica_of(redis)
    try:
        assert wait_until(lambda: link_up(replica), timeout=15)
        n = edge(redis_addr=f"127.0.0.1:{redis.port} replicas=1")
        out = []
        threads = [threading.Thread(target=lambda k=k: out.extend(clicks(n, f"burst{k}", 100)))
                   for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert wait_until(lambda: referral_status(n.port)["sent"] == 400, timeout=20), \
            referral_status(n.port)
        assert set(out) <= visitors_in(replica)
    finally:
        replica.close()


def test_bad_replicas_fail_nginx_t(module_built):
    from harness import Nginx, module_http
    for bad in ("replicas=0", "replicas=x", "replicas=101"):
        n = Nginx(module_http(f"127.0.0.1:6399 {bad}"))
        try:
            code, out = n.test_config()
        finally:
            n.close()
        assert code != 0 and f'invalid value "{bad}" in "referral_redis" directive' in out, out
