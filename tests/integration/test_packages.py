"""The Debian packages of `./build.sh deb` (SPEC "Packaging and supported
nginx"), installed on this machine with apt-get: Debian's stock nginx loads
the module through /etc/nginx/modules-enabled and a click lands in Redis;
referral-worker's unit passes systemd-analyze, its user owns /var/lib/referral,
worker.toml is a conffile, and the installed worker stores that click.

Both packages are purged at the end, also when a test fails, and the machine
is then checked to be as it was. Skipped (ctest: "Skipped") when build/deb
holds no packages; ./build.sh test makes them first."""

import contextlib
import fcntl
import glob
import grp
import hashlib
import os
import pwd
import shlex
import signal
import sqlite3
import subprocess
import tomllib
import types

import pytest

from harness import (BUILD_DIR, CTL, ECHO, KEY, MODULE, NGINX, WORKER, echoed, free_port,
                     http_request, wait_events, wait_port, wait_until, worker_pids)

DEB_DIR = os.path.join(BUILD_DIR, "deb")
MODULE_PKG = "libnginx-mod-http-referral"
WORKER_PKG = "referral-worker"
SO = "/usr/lib/nginx/modules/ngx_http_referral_module.so"
SNIPPET = "/usr/share/nginx/modules-available/mod-http-referral.conf"
UNIT = "/lib/systemd/system/referral-worker.service"
CONF = "/etc/referral/worker.toml"
STATE = "/var/lib/referral"
USER = "referral"
# Two runs of this file (several checkouts on one machine) would install
# and purge the same packages under each other.
LOCK = "/run/lock/referral-test-packages.lock"
# What the packages touch, compared before installing and after purging.
WATCHED = ["/etc/nginx", "/etc/referral", "/etc/systemd/system", "/usr/share/nginx",
           "/usr/lib/nginx", "/lib/systemd/system", STATE, "/usr/bin/referral-worker",
           "/usr/bin/referralctl"]


def run(*argv, check=True, **kw):
    p = subprocess.run(argv, capture_output=True, text=True, timeout=600, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"{argv} exited {p.returncode}:\n{p.stdout}{p.stderr}")
    return p


def apt(*args):
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # Another engineer's apt-get may hold the dpkg lock for a while.
    return run("apt-get", "-y", "-q", "-o", "DPkg::Lock::Timeout=300", *args, env=env)


def status(pkg):
    p = run("dpkg-query", "-W", "-f=${db:Status-Status}", pkg, check=False)
    return p.stdout if p.returncode == 0 else "not-installed"


def as_user(user, *argv, **kw):
    """argv as `user` (no shell: the worker's user has none), from /."""
    env = {k: v for k, v in os.environ.items() if k != "REFERRAL_DATABASE"}
    return run("setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--",
               *argv, cwd="/", env=env, **kw)


def as_unit(*argv):
    """argv roughly as the unit runs it: as its User=, with no new
    privileges, from /, in a private mount namespace where the file system is
    read-only but for ReadWritePaths= (ProtectSystem=strict) and /tmp and
    /var/tmp are empty and private (PrivateTmp=yes). systemd itself cannot
    run the unit here: it is not PID 1 in this container."""
    s = unit()
    user = s["User"][0]
    writable = [p for line in s["ReadWritePaths"] for p in line.split()]
    script = "".join(f"mount --bind {shlex.quote(p)} {shlex.quote(p)}; " for p in writable)
    script += "mount -o remount,bind,ro /; "
    script += "mount -t tmpfs tmpfs /tmp; mount -t tmpfs tmpfs /var/tmp; exec \"$@\""
    env = {k: v for k, v in os.environ.items() if k != "REFERRAL_DATABASE"}
    return run("unshare", "--mount", "--propagation", "private", "sh", "-ec", script, "sh",
               "setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups",
               "--no-new-privs", "--", *argv, cwd="/", env=env)


def snapshot():
    """Every path under WATCHED with its type, mode, owner and link target,
    plus the user and group databases' entries for USER."""
    seen = {}
    for top in WATCHED:
        walk = os.walk(top) if os.path.isdir(top) else [("", [], [top] * os.path.lexists(top))]
        for base, dirs, files in walk:
            for name in dirs + files:
                path = os.path.join(base, name)
                st = os.lstat(path)
                link = os.readlink(path) if os.path.islink(path) else None
                seen[path] = (st.st_mode, st.st_uid, st.st_gid, link)
    for db in ("passwd", "group"):
        seen[db] = run("getent", db, USER, check=False).stdout
    return seen


def built_debs():
    debs = {pkg: sorted(glob.glob(os.path.join(DEB_DIR, f"{pkg}_*.deb")))
            for pkg in (MODULE_PKG, WORKER_PKG)}
    if not any(debs.values()):
        pytest.skip(f"no packages in {DEB_DIR}: ./build.sh deb makes them")
    for pkg, found in debs.items():
        assert len(found) == 1, f"{DEB_DIR} should hold one {pkg}, has {found}"
    # The packages compile the sources themselves; a development build newer
    # than them means sources changed since: this would test old packages.
    for deb in (debs[MODULE_PKG][0], debs[WORKER_PKG][0]):
        for built in (MODULE, WORKER, CTL):
            assert os.path.getmtime(deb) >= os.path.getmtime(built), \
                f"{deb} is older than {built}: ./build.sh deb"
    return [debs[MODULE_PKG][0], debs[WORKER_PKG][0]]


@pytest.fixture(scope="module")
def installed():
    debs = built_debs()
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        left = [p for p in (MODULE_PKG, WORKER_PKG) if status(p) != "not-installed"]
        left += [p for p in (STATE, "/etc/referral") if os.path.lexists(p)]
        if run("getent", "passwd", USER, check=False).returncode == 0:
            left.append(f"user {USER}")
        if left:
            pytest.fail(f"already on this machine: {left}; this test installs and purges "
                        f"them (apt-get purge {MODULE_PKG} {WORKER_PKG})")
        before = snapshot()
        try:
            apt("install", "--no-install-recommends", *debs)
            yield
        finally:
            apt("purge", MODULE_PKG, WORKER_PKG)
            after = snapshot()
            changed = sorted(k for k in before.keys() | after.keys()
                             if before.get(k) != after.get(k))
            assert not changed, f"purging left the machine changed: {changed}"


# ------------------------------------------------------------- the module

def test_module_is_where_debian_modules_are_and_enabled(installed):
    assert status(MODULE_PKG) == "installed"
    files = run("dpkg", "-L", MODULE_PKG).stdout.split()
    assert SO in files and SNIPPET in files, files
    with open(SNIPPET) as f:
        assert f.read() == "load_module modules/ngx_http_referral_module.so;\n"
    enabled = [p for p in glob.glob("/etc/nginx/modules-enabled/*")
               if os.path.realpath(p) == SNIPPET]
    assert len(enabled) == 1 and os.path.islink(enabled[0]), \
        f"modules-enabled: {os.listdir('/etc/nginx/modules-enabled')}"


def test_module_depends_on_the_abi_of_the_installed_nginx(installed):
    depends = [d.strip() for d in
               run("dpkg-query", "-W", "-f=${Depends}", MODULE_PKG).stdout.split(",")]
    abi = [d for d in depends if d.startswith("nginx-abi-")]
    provides = [p.strip() for p in
                run("dpkg-query", "-W", "-f=${Provides}", "nginx").stdout.split(",")]
    assert len(abi) == 1, depends
    assert abi[0] in provides, f"{abi[0]} not provided by nginx ({provides})"


def test_stock_nginx_conf_loads_the_module(installed):
    # /etc/nginx/nginx.conf as shipped includes modules-enabled/*.conf.
    p = run(NGINX, "-T", "-q")
    assert "load_module modules/ngx_http_referral_module.so;" in p.stdout


def test_binaries_depend_on_the_packages_of_their_libraries(installed):
    for pkg, path in ((MODULE_PKG, SO), (WORKER_PKG, "/usr/bin/referral-worker"),
                      (WORKER_PKG, "/usr/bin/referralctl")):
        depends = {d.split()[0] for d in
                   run("dpkg-query", "-W", "-f=${Depends}", pkg).stdout.split(", ")}
        needed = [line.split("[")[1].rstrip("]") for line in
                  run("readelf", "-d", path).stdout.splitlines() if "(NEEDED)" in line]
        found = {}  # soname -> path, from lines "libx.so.1 => /path (0x…)" or "/path (0x…)"
        for line in run("ldd", path).stdout.splitlines():
            name, _, where = line.strip().split(" (")[0].rpartition(" => ")
            found[name or os.path.basename(where)] = where
        for lib in needed:
            lib_path = os.path.realpath(found.get(lib, lib))
            owners = None
            for candidate in (lib_path, lib_path.removeprefix("/usr"), "/usr" + lib_path):
                p = run("dpkg", "-S", candidate, check=False)
                if p.returncode == 0:
                    owners = {o.split(":")[0] for o in p.stdout.split(": ")[0].split(", ")}
                    break
            assert owners, f"{path}: no package owns {lib} ({lib_path})"
            assert owners & depends, f"{pkg} should depend on {owners} for {lib}: {depends}"


# ------------------------------------------------------------- the worker

def unit():
    """The installed unit's [Service] settings: key -> [values]."""
    settings = {}
    with open(UNIT) as f:
        for line in f:
            key, eq, value = line.strip().partition("=")
            if eq and not key.startswith("#"):
                settings.setdefault(key, []).append(value)
    return settings


def test_systemd_analyze_verify_accepts_the_unit(installed):
    p = run("systemd-analyze", "verify", UNIT, check=False)
    assert p.returncode == 0 and not (p.stdout + p.stderr).strip(), p.stdout + p.stderr
    # Exposure 0 (sandboxed) to 10 (unsafe); the unit scores 1.2.
    p = run("systemd-analyze", "security", "--offline=yes", "--threshold=20", UNIT,
            check=False)
    assert p.returncode == 0, p.stdout.splitlines()[-1:] + [p.stderr]


def test_unit_runs_as_the_dedicated_user_that_owns_the_state(installed):
    s = unit()
    assert s["User"] == [USER] and s["Group"] == [USER]
    user = pwd.getpwnam(USER)
    assert user.pw_uid < 1000 and user.pw_shell in ("/usr/sbin/nologin", "/bin/false"), user
    assert grp.getgrgid(user.pw_gid).gr_name == USER
    st = os.stat(STATE)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (user.pw_uid, user.pw_gid, 0o750)
    assert s["ProtectSystem"] == ["strict"] and s["ReadWritePaths"] == [STATE]
    assert s["NoNewPrivileges"] == ["yes"] and s["PrivateTmp"] == ["yes"]


def test_worker_toml_is_a_conffile_only_root_and_the_worker_read(installed):
    lines = run("dpkg-query", "-W", "-f=${Conffiles}", WORKER_PKG).stdout.split("\n")
    conffiles = dict(line.split()[:2] for line in lines if line.strip())
    assert CONF in conffiles, conffiles
    with open(CONF, "rb") as f:
        data = f.read()
    assert hashlib.md5(data).hexdigest() == conffiles[CONF]
    assert tomllib.loads(data.decode())["database"] == f"sqlite://{STATE}/referral.db"
    for path, mode in ((CONF, 0o640), (os.path.dirname(CONF), 0o750)):
        st = os.stat(path)
        assert (st.st_uid, grp.getgrgid(st.st_gid).gr_name, st.st_mode & 0o777) == \
            (0, USER, mode), path


def test_unit_exec_start_pre_creates_the_schema(installed):
    for line in unit()["ExecStartPre"]:
        as_unit(*shlex.split(line))
    db = os.path.join(STATE, "referral.db")
    assert os.stat(db).st_uid == pwd.getpwnam(USER).pw_uid


@contextlib.contextmanager
def stock_nginx(directory, http):
    """/usr/sbin/nginx with the default prefix (so modules/ is Debian's) and a
    config that loads what /etc/nginx/modules-enabled loads."""
    port = free_port()
    conf = os.path.join(directory, "nginx.conf")
    error_log = os.path.join(directory, "error.log")
    temp = "\n".join(f"    {kind}_temp_path {directory}/{kind};"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    with open(conf, "w") as f:
        f.write(f"""include /etc/nginx/modules-enabled/*.conf;
daemon off;
master_process on;
worker_processes 1;
pid {directory}/nginx.pid;
error_log {error_log} info;
events {{ worker_connections 64; }}
http {{
    access_log off;
{temp}
{http.replace("{port}", str(port))}
}}
""")
    proc = subprocess.Popen([NGINX, "-c", conf, "-e", error_log],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    proc.port = port
    try:
        try:
            wait_port(port)
        except TimeoutError:
            raise AssertionError("stock nginx did not start:\n" + open(error_log).read())
        yield proc
    finally:
        proc.send_signal(signal.SIGQUIT)
        proc.wait(20)
    with open(error_log) as f:
        bad = [l for l in f if "[alert]" in l or "[emerg]" in l or "[crit]" in l]
    assert not bad, bad


def test_click_through_the_stock_nginx_is_stored_by_the_installed_worker(installed, redis,
                                                                         rc, tmp):
    db_url = tomllib.load(open(CONF, "rb"))["database"]
    ctl = ["/usr/bin/referralctl", "--database", db_url]
    as_user(USER, *ctl, "migrate")
    code = as_user(USER, *ctl, "code", "create", "--user", "42").stdout.splitlines()[0]

    key = os.path.join(tmp, "key")
    with open(key, "wb") as f:
        f.write(KEY)
    http = f"""
    referral_redis 127.0.0.1:{redis.port};
    referral_secret {key};
    server {{
        listen 127.0.0.1:{{port}};
        location / {{ referral on; {ECHO} }}
    }}"""
    with stock_nginx(tmp, http) as nginx:
        # the port opens before the master has forked its workers
        pids = wait_until(lambda: worker_pids(types.SimpleNamespace(proc=nginx)))
        assert pids, "the packaged nginx started no worker"
        for pid in pids:
            with open(f"/proc/{pid}/maps") as f:
                assert SO in f.read(), "the worker has not loaded the packaged module"
        r = http_request(nginx.port, f"/?ref={code}")
        assert r.status == 200 and echoed(r)["code"] == code, r
        events = wait_events(rc, 1)
    assert [(e["type"], e["code"]) for e in events] == [("click", code)]

    # The unit's own command line, sandboxed like the unit, with the test
    # Redis and --once.
    exec_start = shlex.split(unit()["ExecStart"][0])
    as_unit(*exec_start, "--redis", redis.url, "--once")
    con = sqlite3.connect(db_url.removeprefix("sqlite://"))
    try:
        rows = con.execute("SELECT r.code, s.action FROM referral_response s "
                           "JOIN referral r ON r.id = s.referral_id").fetchall()
    finally:
        con.close()
    assert rows == [(code, "click")]
