"""referralctl: every command, in text and --json, and its errors, on
SQLite and PostgreSQL (SPEC "The worker and the main database")."""

import os
import re
import subprocess

import pytest

from harness import WORKER, MainDb, RedisServer, ctl, event_fields, xadd_args


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp):
    pg = request.getfixturevalue("pg") if request.param == "postgresql" else None
    d = MainDb(request.param, tmp, pg)
    return d


@pytest.fixture
def migrated(db):
    ctl(db.url, "migrate", check=True)
    return db


@pytest.fixture(scope="module")
def redis():
    r = RedisServer().start()
    yield r
    r.close()


def earn(db, redis, stream):
    """alice (free) refers bob and carol through the worker: trial days."""
    code = ctl(db.url, "code", "create", "--user", "alice", check=True)[1].strip()
    c = redis.client()
    for user in ("bob", "carol"):
        c.cmd(*xadd_args(stream, event_fields("click", code=code)))
        c.cmd(*xadd_args(stream, event_fields("conversion", code=code, action="signup", user=user)))
    c.close()
    p = subprocess.run([WORKER, "--once", "--redis", redis.url, "--stream", stream, "--database", db.url],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return code


# --------------------------------------------------------------- migrate

def test_migrate_creates_the_schema_and_is_idempotent(db):
    rc, out, err = ctl(db.url, "migrate")
    assert rc == 0, err
    assert "version 0 to 4" in out
    for table in ("referral", "referral_response", "referral_user", "referral_reward", "referral_delivery"):
        assert db.count(f"SELECT count(*) FROM {table}") == 0
    assert db.query("SELECT max(version) FROM referral_schema_version") == [("4",)]
    rc, out, _ = ctl(db.url, "migrate")
    assert rc == 0 and "already at version 4" in out
    rc, out, _ = ctl(db.url, "migrate", json_out=True)
    assert rc == 0 and out == {"previous_version": 4, "version": 4, "changed": False}
    assert db.count("SELECT count(*) FROM referral_schema_version") == 4


def test_migrate_json_on_a_fresh_database(db):
    rc, out, _ = ctl(db.url, "migrate", json_out=True)
    assert rc == 0 and out == {"previous_version": 0, "version": 4, "changed": True}


def test_migrate_upgrades_a_version_1_database(db):
    ctl(db.url, "migrate", "--to", "1", check=True)
    db.query("INSERT INTO referral_user (user_id, plan, created_at)"
             " VALUES ('old', 'paid', '2026-01-01 00:00:00.000000')")
    rc, out, err = ctl(db.url, "migrate")
    assert rc == 0, err
    assert "version 1 to 4" in out
    assert db.query("SELECT plan, COALESCE(plan_changed_at::text, '') FROM referral_user"
                    if db.backend == "postgresql" else
                    "SELECT plan, COALESCE(plan_changed_at, '') FROM referral_user") == [("paid", "")]


def test_migration_4_speeds_up_clicks_on_postgresql_only(db):
    """Version 4 takes the per-row foreign-key trigger off the click path
    on PostgreSQL and has event ids compare bytewise; SQLite keeps its key
    (a rowid lookup) and compares bytewise already."""
    ctl(db.url, "migrate", "--to", "3", check=True)
    if db.backend == "postgresql":
        fk = ("SELECT count(*) FROM pg_constraint WHERE conrelid = 'referral_response'::regclass"
              " AND contype = 'f'")
        assert db.count(fk) == 1
        ctl(db.url, "migrate", check=True)
        assert db.count(fk) == 0
        # the rewards' key to their response stays
        assert db.count("SELECT count(*) FROM pg_constraint WHERE conrelid = 'referral_reward'::regclass"
                        " AND contype = 'f'") == 1
        # event ids compare bytewise, in their unique indexes too
        for table in ("referral_response", "referral_event", "referral_early"):
            assert db.query("SELECT c.collname FROM pg_attribute a JOIN pg_collation c ON c.oid = a.attcollation"
                            f" WHERE a.attrelid = '{table}'::regclass AND a.attname = 'event_id'") == [("C",)]
        assert db.query("SELECT c.collname FROM pg_index i JOIN pg_collation c ON c.oid = i.indcollation[0]"
                        " WHERE i.indrelid = 'referral_response'::regclass AND i.indisunique"
                        " AND i.indkey[0] = (SELECT attnum FROM pg_attribute WHERE attrelid ="
                        " 'referral_response'::regclass AND attname = 'event_id')") == [("C",)]
    else:
        fk = "SELECT count(*) FROM pragma_foreign_key_list('referral_response')"
        assert db.count(fk) == 1
        ctl(db.url, "migrate", check=True)
        assert db.count(fk) == 1
    assert db.query("SELECT max(version) FROM referral_schema_version") == [("4",)]


def test_migrate_refuses_a_newer_schema(db):
    ctl(db.url, "migrate", check=True)
    db.query("INSERT INTO referral_schema_version (version, applied_at)"
             " VALUES (99, '2026-01-01 00:00:00')")
    rc, out, err = ctl(db.url, "migrate")
    assert rc == 1
    assert "newer" in err and "nothing to do" not in out


def test_commands_refuse_an_unmigrated_database(db):
    if db.backend == "sqlite":
        rc, _, err = ctl(db.url, "stats")
        assert rc == 1 and "referralctl migrate" in err   # no file: not created either
        assert not os.path.exists(db.path)
        import sqlite3
        sqlite3.connect(db.path).close()
    rc, _, err = ctl(db.url, "code", "show", "--user", "alice")
    assert rc == 1 and "referralctl migrate" in err
    rc, out, _ = ctl(db.url, "stats", json_out=True)
    assert rc == 1 and "referralctl migrate" in out["error"]


# ------------------------------------------------------------------ code

def test_code_create_and_show(migrated):
    db = migrated
    rc, out, err = ctl(db.url, "code", "create", "--user", "alice")
    assert rc == 0, err
    primary = out.strip()
    assert re.fullmatch(r"[A-Za-z0-9]{40}", primary)
    # the same code again: created only when missing
    assert ctl(db.url, "code", "create", "--user", "alice")[1].strip() == primary
    rc, j, _ = ctl(db.url, "code", "create", "--user", "alice", json_out=True)
    assert j["code"] == primary and j["created"] is False and j["label"] == ""
    rc, j, _ = ctl(db.url, "code", "create", "--user", "alice", "--label", "twitter", json_out=True)
    assert rc == 0 and j["created"] is True and j["label"] == "twitter" and j["code"] != primary
    twitter = j["code"]
    rc, out, _ = ctl(db.url, "code", "show", "--user", "alice")
    assert rc == 0 and primary in out and twitter in out and "twitter" in out
    rc, j, _ = ctl(db.url, "code", "show", "--user", "alice", json_out=True)
    assert [c["code"] for c in j["codes"]] == [primary, twitter]
    assert [c["label"] for c in j["codes"]] == ["", "twitter"]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", c["created_at"]) for c in j["codes"])
    assert db.count("SELECT count(*) FROM referral WHERE user_id = 'alice'") == 2


def test_code_errors(migrated):
    db = migrated
    rc, _, err = ctl(db.url, "code", "show", "--user", "nobody")
    assert rc == 1 and "nobody" in err and "no referral code" in err
    rc, j, _ = ctl(db.url, "code", "show", "--user", "nobody", json_out=True)
    assert rc == 1 and j["reason"] == "unknown_user"
    rc, _, err = ctl(db.url, "code", "create", "--user", "has space")
    assert rc == 1 and "bad user" in err
    rc, _, err = ctl(db.url, "code", "create", "--user", "x" * 129)
    assert rc == 1 and "bad user" in err
    rc, _, err = ctl(db.url, "code", "create", "--user", "alice", "--label", "l" * 65)
    assert rc == 1 and "bad label" in err
    rc, _, _ = ctl(db.url, "code", "create")          # --user is required
    assert rc == 2
    rc, _, _ = ctl(db.url, "code")
    assert rc == 2


# -------------------------------------------------------- rewards, redeem

def test_rewards_redeem_and_stats(migrated, redis):
    db = migrated
    earn(db, redis, "ctl:" + os.urandom(4).hex())
    rc, out, err = ctl(db.url, "rewards", "--user", "alice")
    assert rc == 0, err
    assert out.count("7 extra trial days") == 2 and "bob" in out and "carol" in out
    rc, j, _ = ctl(db.url, "rewards", "--user", "alice", json_out=True)
    rewards = j["rewards"]
    assert [(r["label"], r["role"], r["referred_user"], r["redeemed"]) for r in rewards] == [
        ("7 extra trial days", "referrer", "bob", False),
        ("7 extra trial days", "referrer", "carol", False)]
    assert rewards[0]["kind"] == "trial_days" and rewards[0]["amount"] == 7
    assert rewards[0]["referral_type"] == "free-trial-extension"
    assert rewards[0]["date_redeemed"] is None
    rc, j, _ = ctl(db.url, "rewards", "--user", "bob", json_out=True)
    assert [r["role"] for r in j["rewards"]] == ["referee"]

    first = rewards[0]["id"]
    rc, out, err = ctl(db.url, "redeem", str(first))
    assert rc == 0, err
    assert "redeemed" in out and "7 extra trial days" in out
    # a second redeem: a clear message, exit status 1
    rc, out, err = ctl(db.url, "redeem", str(first))
    assert rc == 1 and "already redeemed" in err
    rc, j, _ = ctl(db.url, "redeem", str(first), json_out=True)
    assert rc == 1 and j["reason"] == "already_redeemed" and "already redeemed" in j["error"]
    rc, j, _ = ctl(db.url, "redeem", str(rewards[1]["id"]), json_out=True)
    assert rc == 0 and j["redeemed"] is True and j["date_redeemed"]
    rc, j, _ = ctl(db.url, "rewards", "--user", "alice", json_out=True)
    assert [r["redeemed"] for r in j["rewards"]] == [True, True]
    rc, out, _ = ctl(db.url, "rewards", "--user", "alice")
    assert out.count("yes, ") == 2
    assert db.count("SELECT count(*) FROM referral_reward WHERE redeemed") == 2

    rc, out, _ = ctl(db.url, "stats")
    assert rc == 0 and re.search(r"alice\s+2\s+2\s+0\s+2", out), out
    rc, j, _ = ctl(db.url, "stats", json_out=True)
    assert j["referrers"] == [{"user": "alice", "codes": 1, "clicks": 2, "signups": 2,
                               "subscriptions": 0, "rewards": 2}]


def test_redeem_and_rewards_errors(migrated):
    db = migrated
    rc, _, err = ctl(db.url, "redeem", "999")
    assert rc == 1 and "no reward with id 999" in err
    rc, j, _ = ctl(db.url, "redeem", "999", json_out=True)
    assert rc == 1 and j["reason"] == "unknown_reward"
    rc, _, err = ctl(db.url, "redeem", "abc")
    assert rc == 1 and "bad reward id" in err
    rc, _, err = ctl(db.url, "redeem", "-3")
    assert rc != 0
    rc, _, _ = ctl(db.url, "redeem")
    assert rc == 2
    rc, _, err = ctl(db.url, "rewards", "--user", "ghost")
    assert rc == 1 and "unknown user ghost" in err
    rc, j, _ = ctl(db.url, "rewards", "--user", "ghost", json_out=True)
    assert rc == 1 and j["reason"] == "unknown_user"
    # a known user without rewards is not an error
    ctl(db.url, "code", "create", "--user", "alice", check=True)
    rc, out, _ = ctl(db.url, "rewards", "--user", "alice")
    assert rc == 0 and "no rewards yet" in out
    rc, j, _ = ctl(db.url, "rewards", "--user", "alice", json_out=True)
    assert rc == 0 and j == {"user": "alice", "rewards": []}


def test_stats_empty(migrated):
    rc, out, _ = ctl(migrated.url, "stats")
    assert rc == 0 and "no referral activity" in out
    rc, j, _ = ctl(migrated.url, "stats", json_out=True)
    assert j == {"referrers": [], "counted": {}}


# ----------------------------------------------------------- the database

def test_database_from_the_environment(tmp):
    path = os.path.join(tmp, "env.db")
    env = dict(os.environ, REFERRAL_DATABASE="sqlite://" + path)
    rc, out, err = ctl(None, "migrate", env=env)
    assert rc == 0, err
    assert os.path.exists(path)
    rc, out, _ = ctl(None, "code", "create", "--user", "u1", env=env)
    assert rc == 0 and len(out.strip()) == 40
    # a plain path works too, and --database wins over the environment
    rc, out2, _ = ctl(path, "code", "create", "--user", "u1",
                      env=dict(os.environ, REFERRAL_DATABASE="/nonexistent/x.db"))
    assert rc == 0 and out2 == out


def test_bad_database_urls(tmp):
    rc, _, err = ctl("mysql://db/x", "stats")
    assert rc == 1 and "mysql" in err
    rc, _, err = ctl("postgresql://nobody@127.0.0.1:1/x", "stats")
    assert rc == 1 and "PostgreSQL" in err
    rc, _, _ = ctl(os.path.join(tmp, "x.db"), "bogus-command")
    assert rc == 2


def test_password_not_shown_in_errors():
    rc, _, err = ctl("postgresql://u:hunter2@127.0.0.1:1/x", "stats")
    assert rc == 1
    assert "hunter2" not in err
