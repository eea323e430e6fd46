"""The journal and the spool's bound (issue 10, SPEC `referral_spool`): an
nginx worker killed with SIGKILL under wrk load loses no event, with Redis
up and with Redis down, because a new worker takes its journal over and
replays it; `max_size` bounds the spool, and what does not fit is dropped,
counted and logged at most once a second; bad sizes fail `nginx -t` on
their line."""

import os
import re
import signal
import subprocess
import time

import pytest

from harness import (ClickTraffic, ECHO, Nginx, http_request, referral_status, wait_until,
                     worker_pids)

SPOOL = "    referral_spool {dir}/spool;"
WRK_SECONDS = 6


def wrk(port, seconds):
    """wrk in the background on the click location; returns the process."""
    return subprocess.Popen(["wrk", "-t1", "-c16", f"-d{seconds}s",
                             f"http://127.0.0.1:{port}/?ref=wrk_code"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wrk_2xx(out):
    """Requests wrk saw answered with a 2xx."""
    total = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return total - (int(bad.group(1)) if bad else 0)


def busiest_worker(n):
    """The worker with the most CPU time: the one wrk keeps busy."""
    def ticks(pid):
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    return max(worker_pids(n), key=ticks)


def stream_events(redis):
    c = redis.client()
    try:
        return [fields for _, fields in c.stream("referral:events")]
    finally:
        c.close()


def check_stream(redis, visitors, at_least):
    """Every visitor's click is in the stream; at least `at_least` distinct
    events; an event that came twice came with the same id and content."""
    by_id = {}
    for e in stream_events(redis):
        if e["id"] in by_id:
            assert by_id[e["id"]] == e, f"two different events with id {e['id']}"
        by_id[e["id"]] = e
    seen = {e["visitor"] for e in by_id.values()}
    missing = set(visitors) - seen
    assert not missing, f"{len(missing)} of {len(visitors)} answered clicks are not in the stream"
    assert len(by_id) >= at_least, f"{len(by_id)} distinct events for {at_least} answered requests"
    return by_id


def kill_under_load(n, redis, redis_down):
    if redis_down:
        redis.stop()
    load = wrk(n.port, WRK_SECONDS)
    # a request cut by the kill may fail: it was never answered, so
    # nothing is owed for it (its failure is not checked)
    clicks = ClickTraffic(n.port, "journal", threads=2).start()
    time.sleep(WRK_SECONDS / 2)
    victim = busiest_worker(n)
    if not redis_down:
        # At a random instant the victim may hold nothing unacknowledged
        # (its journal empties whenever Redis catches up, which is often):
        # Redis stopped for a moment, well under the reply timeout, makes
        # sure the kill finds events that are only in the journal.
        os.kill(redis.proc.pid, signal.SIGSTOP)
        time.sleep(0.3)
    os.kill(victim, signal.SIGKILL)
    if not redis_down:
        os.kill(redis.proc.pid, signal.SIGCONT)
    # The master starts a new worker in its place.
    assert wait_until(lambda: len(worker_pids(n)) == 2 and victim not in worker_pids(n),
                      timeout=10), n.log()[-2000:]
    assert f"worker process {victim} exited on signal 9" in n.log()
    n.expect_killed_worker(victim)
    out, _ = load.communicate(timeout=WRK_SECONDS + 30)
    clicks.stop()
    answered = wrk_2xx(out) + len(clicks.visitors)
    assert clicks.visitors and answered > len(clicks.visitors), out
    if redis_down:
        redis.start()
    # The dead worker's journal (and, with Redis down, its spool part) is
    # taken over and replayed: nothing left in the directory, all in Redis.
    spool = os.path.join(n.dir, "spool")

    def drained():
        s = referral_status(n.port)
        # the live workers' journals stay; the victim's must be gone
        left = [f for f in os.listdir(spool)
                if not f.startswith("j-") or f.startswith(f"j-{victim}-")]
        return s["buffered"] == 0 and s["redis"] == "connected" and not left \
            and s["replayed"] == s["spooled"]
    assert wait_until(drained, timeout=60), (referral_status(n.port), os.listdir(spool))
    by_id = check_stream(redis, clicks.visitors, answered)
    s = referral_status(n.port)
    assert s["dropped"] == 0, s
    print(f"{answered} answered, {len(by_id)} distinct events, status {s}")
    if not redis_down:  # with Redis down it is all in spool part files
        took = [int(m) for m in re.findall(r"took over (\d+) event", n.log())]
        assert took and sum(took) > 0, "no worker took the dead one's journal over"
        assert s["spooled"] >= sum(took), (took, s)


def test_sigkill_under_load_with_redis_up_loses_nothing(edge, redis):
    n = edge(http=SPOOL, workers=2)
    kill_under_load(n, redis, redis_down=False)


def test_sigkill_under_load_with_redis_down_loses_nothing(edge, redis):
    n = edge(http=SPOOL, workers=2)
    kill_under_load(n, redis, redis_down=True)


def test_journal_is_deleted_on_a_graceful_exit(edge, redis):
    n = edge(http=SPOOL, workers=1)
    for i in range(50):
        assert http_request(n.port, f"/?ref=graceful_{i}").status == 200
    assert wait_until(lambda: referral_status(n.port)["sent"] == 50)
    n.stop()
    assert os.listdir(os.path.join(n.dir, "spool")) == []
    assert len(stream_events(redis)) == 50


def test_spool_full_drops_counts_and_logs_once_a_second(edge, redis):
    redis.stop()
    n = edge(http="    referral_buffer 64k;\n    referral_spool {dir}/spool max_size=64k;", workers=1)
    t0 = time.time()
    answered = 0
    for i in range(1200):  # ~400 bytes each: several times memory + spool
        r = http_request(n.port, f"/?ref=full_{i}")
        assert r.status == 200, r  # a full spool never fails a request
        answered += 1
    s = wait_until(lambda: (lambda s: s if s["dropped"] > 0 else None)(referral_status(n.port)))
    elapsed = time.time() - t0
    assert s, referral_status(n.port)
    spool = os.path.join(n.dir, "spool")
    on_disk = sum(os.path.getsize(os.path.join(spool, f)) for f in os.listdir(spool)
                  if not f.startswith("j-"))
    assert 0 < on_disk <= 64 * 1024, on_disk
    drops = [l for l in n.log().splitlines() if "referral: dropped" in l]
    assert drops and "max_size" in drops[0], drops
    assert len(drops) <= elapsed + 2, f"{len(drops)} drop lines in {elapsed:.1f}s"
    # Redis back: what was kept arrives, the rest was counted.
    redis.start()
    assert wait_until(lambda: (lambda s: s["buffered"] == 0 and s["replayed"] == s["spooled"])(
        referral_status(n.port)), timeout=30), referral_status(n.port)
    s = referral_status(n.port)
    events = stream_events(redis)
    assert len({e["id"] for e in events}) == s["sent"]
    assert s["sent"] + s["dropped"] == answered, s


GOOD = """
    referral_redis 127.0.0.1:6399;
    referral_secret {dir}/keys/key1;
    SPOOL
    server {
        listen 127.0.0.1:{port};
        location / { referral on; ECHO }
    }
""".replace("ECHO", ECHO)


@pytest.fixture
def conf(module_built):
    made = []

    def make(spool):
        n = Nginx(GOOD.replace("SPOOL", spool))
        made.append(n)
        return n
    yield make
    for n in made:
        n.close()


@pytest.mark.parametrize("spool,message", [
    ("referral_spool {dir}/spool max_size=lots;",
     'invalid value "max_size=lots" in "referral_spool" directive, it must be max_size=SIZE'),
    ("referral_spool {dir}/spool max_size=1k;",
     'invalid value "max_size=1k" in "referral_spool" directive'),
    ("referral_spool {dir}/spool max_size=;",
     'invalid value "max_size=" in "referral_spool" directive'),
    ("referral_spool {dir}/spool size=1m;",
     'invalid parameter "size=1m" in "referral_spool" directive'),
])
def test_bad_max_size_fails_nginx_t_on_its_line(conf, spool, message):
    n = conf(spool)
    code, out = n.test_config()
    assert code != 0, out
    emerg = [l for l in out.splitlines() if "[emerg]" in l]
    assert len(emerg) == 1 and message in emerg[0], out
    with open(n.conf) as f:
        line = next(i for i, l in enumerate(f, 1) if "referral_spool" in l)
    assert emerg[0].endswith(f" in {n.conf}:{line}"), emerg[0]


@pytest.mark.parametrize("spool", ["referral_spool {dir}/spool max_size=1g;",
                                   "referral_spool {dir}/spool max_size=512m;",
                                   "referral_spool {dir}/spool;"])
def test_good_max_size_passes(conf, spool):
    code, out = conf(spool).test_config()
    assert code == 0, out
