"""Real servers on 127.0.0.1 for the integration tests: redis-server, a
throwaway PostgreSQL cluster, and Debian's nginx with the built module.
Nothing is mocked; every server is started here and stopped by the test."""

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading as _threading
import time

SOURCE_DIR = os.environ.get(
    "REFERRAL_SOURCE_DIR",
    os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BUILD_DIR = os.environ.get("REFERRAL_BUILD_DIR", os.path.join(SOURCE_DIR, "build"))
# REFERRAL_NGINX and REFERRAL_MODULE run the module tests against another
# nginx and the .so built for it (tests/nginx-versions.sh).
MODULE = os.environ.get("REFERRAL_MODULE", os.path.join(BUILD_DIR, "ngx_http_referral_module.so"))
WORKER = os.path.join(BUILD_DIR, "referral-worker")
CTL = os.path.join(BUILD_DIR, "referralctl")
NGINX = os.environ.get("REFERRAL_NGINX", "/usr/sbin/nginx")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_dead_sockets = []


def dead_port():
    """A port where nothing listens, for as long as the tests run: it stays
    bound, so a connection to it is refused and the kernel never gives it
    to a client as its own source port (a free port in the ephemeral range
    could be, and a connection to itself would then succeed)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    _dead_sockets.append(s)
    return s.getsockname()[1]


def wait_port(port, timeout=10.0, host="127.0.0.1"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on {host}:{port}")


def world_dir(prefix):
    """A temporary directory every user can enter: nginx workers run as
    nobody, PostgreSQL as postgres."""
    d = tempfile.mkdtemp(prefix=prefix)
    os.chmod(d, 0o777)
    return d


# ---------------------------------------------------------------- Redis

class RedisError(Exception):
    pass


class RedisClient:
    """Minimal RESP2 client: enough for the tests to read what arrived."""

    def __init__(self, port=None, unix=None, password=None, timeout=10.0):
        if unix:
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.connect(unix)
        else:
            self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.settimeout(timeout)
        self.buf = b""
        if password:
            self.cmd("AUTH", password)

    def close(self):
        self.sock.close()

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def _reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n).decode("utf-8", "replace")
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise RedisError(f"unexpected reply {line!r}")

    def cmd(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))
        return self._reply()

    def pipeline(self, commands):
        """Send many commands at once, read every reply (errors returned, not raised)."""
        out = []
        for args in commands:
            out.append(b"*%d\r\n" % len(args))
            for a in args:
                a = a if isinstance(a, bytes) else str(a).encode()
                out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))
        replies = []
        for _ in commands:
            try:
                replies.append(self._reply())
            except RedisError as e:
                replies.append(e)
        return replies

    def stream(self, key):
        """Every entry of a stream as (entry_id, {field: value})."""
        entries = self.cmd("XRANGE", key, "-", "+") or []
        return [(eid, dict(zip(kv[0::2], kv[1::2]))) for eid, kv in entries]


class RedisServer:
    def __init__(self, password=None, unix=False, port=None):
        self.dir = world_dir("referral-redis-")
        self.port = port or free_port()
        self.password = password
        self.unix = os.path.join(self.dir, "redis.sock") if unix else None
        self.proc = None

    def start(self, *extra):
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", self.dir,
                "--daemonize", "no", "--logfile", os.path.join(self.dir, "redis.log")] + list(extra)
        if self.password:
            args += ["--requirepass", self.password]
        if self.unix:
            args += ["--unixsocket", self.unix, "--unixsocketperm", "777"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def client(self):
        return RedisClient(self.port, password=self.password)

    @property
    def url(self):
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}"


# ------------------------------------------------------------ PostgreSQL

class SentinelSet:
    """A primary, a replica and three redis-sentinel processes (Debian's)
    on 127.0.0.1, quorum 2, a primary judged down after 1 s."""

    SERVICE = "referral"

    def __init__(self):
        self.primary = RedisServer()
        self.replica = RedisServer()
        self.sentinels = []  # (port, dir, proc)

    def start(self):
        self.primary.start()
        self.replica.start("--replicaof", "127.0.0.1", str(self.primary.port))
        wait_until(lambda: self.replica.client().cmd("INFO", "replication").find("master_link_status:up") >= 0,
                   timeout=15)
        for _ in range(3):
            port, d = free_port(), world_dir("referral-sentinel-")
            conf = os.path.join(d, "sentinel.conf")
            with open(conf, "w") as f:
                f.write(f"port {port}\nbind 127.0.0.1\ndir {d}\n"
                        f"sentinel monitor {self.SERVICE} 127.0.0.1 {self.primary.port} 2\n"
                        f"sentinel down-after-milliseconds {self.SERVICE} 1000\n"
                        f"sentinel failover-timeout {self.SERVICE} 4000\n"
                        f"sentinel parallel-syncs {self.SERVICE} 1\n")
            proc = subprocess.Popen(["redis-sentinel", conf, "--logfile", os.path.join(d, "sentinel.log")],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_port(port)
            self.sentinels.append((port, d, proc))
        # Every Sentinel knows the replica and the other Sentinels.
        wait_until(lambda: all(self.sentinel_cmd(p, "SENTINEL", "replicas", self.SERVICE)
                               and len(self.sentinel_cmd(p, "SENTINEL", "sentinels", self.SERVICE)) == 2
                               for p, _, _ in self.sentinels), timeout=30)
        return self

    def sentinel_cmd(self, port, *args):
        c = RedisClient(port)
        try:
            return c.cmd(*args)
        finally:
            c.close()

    def primary_port(self):
        return int(self.sentinel_cmd(self.sentinels[0][0], "SENTINEL", "get-master-addr-by-name",
                                     self.SERVICE)[1])

    @property
    def url(self):
        hosts = ",".join(f"127.0.0.1:{p}" for p, _, _ in self.sentinels)
        return f"redis-sentinel://{hosts}#{self.SERVICE}"

    def fail_over(self, timeout=30):
        """Kills the current primary; returns the port of the new one."""
        old = self.primary_port()
        victim = self.primary if self.primary.port == old else self.replica
        victim.proc.kill()
        victim.proc.wait(10)
        wait_until(lambda: self.primary_port() != old, timeout=timeout)
        new = self.primary_port()
        c = RedisClient(new)
        try:
            wait_until(lambda: c.cmd("ROLE")[0] == "master", timeout=timeout)
        finally:
            c.close()
        return new

    def close(self):
        for _, d, proc in self.sentinels:
            proc.kill()
            proc.wait(10)
            shutil.rmtree(d, ignore_errors=True)
        self.primary.close()
        self.replica.close()


def _pg_bin(name):
    base = "/usr/lib/postgresql"
    for v in sorted(os.listdir(base), reverse=True):
        p = os.path.join(base, v, "bin", name)
        if os.path.exists(p):
            return p
    raise FileNotFoundError(name)


class Postgres:
    """A throwaway cluster on a free port. initdb refuses to run as root, so
    the cluster belongs to the postgres user when the tests run as root."""

    def __init__(self):
        self.dir = world_dir("referral-pg-")
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self.user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name

    def _run(self, args, **kw):
        if os.geteuid() == 0:
            args = ["runuser", "-u", "postgres", "--"] + args
        return subprocess.run(args, check=True, capture_output=True, text=True, **kw)

    def start(self):
        self._run([_pg_bin("initdb"), "-D", self.data, "-A", "trust", "-U", self.user,
                   "--no-sync", "-E", "UTF8"])
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        self._run([_pg_bin("pg_ctl"), "-D", self.data, "-o", opts, "-w", "-l",
                   os.path.join(self.dir, "pg.log"), "start"])
        self._run([_pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                   "-U", self.user, "referral"])
        return self

    @property
    def url(self):
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/referral"

    def query(self, sql):
        """Rows as lists of strings (psql unaligned output)."""
        out = subprocess.run(["psql", "-X", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1",
                              self.url, "-c", sql],
                             check=True, capture_output=True, text=True).stdout
        return [line.split("\t") for line in out.splitlines() if line]

    def close(self):
        try:
            self._run([_pg_bin("pg_ctl"), "-D", self.data, "-m", "immediate", "stop"])
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


# ----------------------------------------------------------------- nginx

KEY = b"k" * 40


class Nginx:
    """Debian's /usr/sbin/nginx with the built module, on a free port.
    `http` is the body of the http{} block; {port}, {dir} and {module} are
    filled in. Fails a test on any [alert], [emerg] or sanitizer line."""

    def __init__(self, http, workers=1, main=""):
        self.dir = world_dir("referral-nginx-")
        self.port = free_port()
        for sub in ("logs", "spool", "keys"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
            os.chmod(os.path.join(self.dir, sub), 0o777)
        self.key(KEY, "key1")
        self.conf = os.path.join(self.dir, "nginx.conf")
        self.error_log = os.path.join(self.dir, "logs", "error.log")
        self.expected_bad = []  # lines a test caused on purpose: see expect_bad_line
        self.write(http, workers, main)
        self.proc = None

    def key(self, data, name):
        path = os.path.join(self.dir, "keys", name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def write(self, http, workers=1, main=""):
        text = f"""
load_module {MODULE};
daemon off;
master_process on;
worker_processes {workers};
pid {self.dir}/nginx.pid;
error_log {self.error_log} info;
{main}
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {self.dir}/body;
    proxy_temp_path {self.dir}/proxy;
    fastcgi_temp_path {self.dir}/fastcgi;
    uwsgi_temp_path {self.dir}/uwsgi;
    scgi_temp_path {self.dir}/scgi;
{http}
}}
"""
        text = text.replace("{port}", str(self.port)).replace("{dir}", self.dir)
        with open(self.conf, "w") as f:
            f.write(text)

    def test_config(self):
        """`nginx -t`: (exit status, output)."""
        p = subprocess.run([NGINX, "-t", "-p", self.dir, "-c", self.conf, "-e", self.error_log],
                           capture_output=True, text=True)
        return p.returncode, p.stdout + p.stderr

    def start(self):
        self.proc = subprocess.Popen([NGINX, "-p", self.dir, "-c", self.conf, "-e", self.error_log],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_port(self.port)
        except TimeoutError:
            self.stop()
            raise RuntimeError("nginx did not start:\n" + self.log())
        return self

    def log(self):
        try:
            with open(self.error_log, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def signal(self, name):
        subprocess.run([NGINX, "-p", self.dir, "-c", self.conf, "-e", self.error_log, "-s", name],
                       check=True, capture_output=True)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def expect_bad_line(self, *parts):
        """An [alert], [emerg] or [crit] line that has all of `parts` is the
        test's doing (a worker it killed, a reload it made fail). The log is
        not rewritten for that: nginx appends to it all the while, and a
        line written between a read and a rewrite would be lost."""
        self.expected_bad.append(parts)

    def expect_killed_worker(self, pid=None):
        """The master reports a worker the test SIGKILLed (`pid`, or any)
        at [alert]."""
        self.expect_bad_line("[alert]", f"process {pid} exited on signal 9" if pid else "exited on signal 9")

    def assert_clean_log(self):
        def expected(line):
            return any(all(p in line for p in parts) for parts in self.expected_bad)
        bad = [l for l in self.log().splitlines()
               if ("[alert]" in l or "[emerg]" in l or "[crit]" in l) and not expected(l)
               or "AddressSanitizer" in l or "runtime error" in l]
        assert not bad, "error.log has:\n" + "\n".join(bad)


# ---- module helpers
# Used by tests/integration/test_module_*.py: a raw HTTP/1.1 client (so a
# test can send odd headers, several Cookie lines, CR/LF in a URI), the
# attribution cookie as a client sees it, the module's variables as echoed
# by `return 200 ECHO`, events in the stream, and referral_status.

import http.client as _http_client
import json as _json
import re as _re
import ssl as _ssl

STREAM = "referral:events"
HEX32 = _re.compile(r"^[0-9a-f]{32}$")
CLICK_FIELDS = {"v", "id", "type", "ts", "code", "visitor", "first_ts", "ip",
                "ua", "url", "referer", "host"}
CONVERSION_FIELDS = CLICK_FIELDS | {"action", "user", "amount", "currency", "order", "customer"}
# A location body that shows the three variables; parse it with echoed().
ECHO = 'return 200 "status=$referral_status code=$referral_code visitor=$referral_visitor\\n";'


class Response:
    def __init__(self, status, headers, body, elapsed):
        self.status = status
        self.headers = headers            # [(name, value)], in order, repeats kept
        self.body = body
        self.elapsed = elapsed

    def all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def header(self, name):
        values = self.all(name)
        return values[0] if values else None

    def cookie(self, name="referral"):
        """The Set-Cookie for `name` as a SetCookie, or None; fails on two."""
        found = [c for c in map(SetCookie, self.all("Set-Cookie")) if c.name == name]
        assert len(found) <= 1, f"several Set-Cookie for {name}: {self.all('Set-Cookie')}"
        return found[0] if found else None

    def __repr__(self):
        return f"<{self.status} {self.headers} {self.body!r}>"


class SetCookie:
    def __init__(self, raw):
        self.raw = raw
        parts = [p.strip() for p in raw.split(";")]
        self.name, _, self.value = parts[0].partition("=")
        self.attrs = parts[1:]            # e.g. ["Max-Age=2592000", "Path=/", "HttpOnly"]

    def attr(self, name):
        """Value of `Name=value` (None when absent), True for a present flag."""
        for a in self.attrs:
            k, eq, v = a.partition("=")
            if k.lower() == name.lower():
                return v if eq else True
        return None

    def names(self):
        return [a.partition("=")[0].lower() for a in self.attrs]


def http_request(port, target="/", headers=(), method="GET", host="localhost",
                 body=None, tls=False, timeout=10.0):
    """One request on a fresh connection. `headers` is a list of (name, value)
    sent verbatim (latin-1), so repeats and odd bytes are possible."""
    lines = [f"{method} {target} HTTP/1.1"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines += [f"{k}: {v}" for k, v in headers]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: close")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    if body is not None:
        data += body if isinstance(body, bytes) else body.encode()
    start = time.time()
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        if tls:
            ctx = _ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = _ssl.CERT_NONE
            sock = ctx.wrap_socket(sock, server_hostname="localhost")
        sock.sendall(data)
        resp = _http_client.HTTPResponse(sock, method=method)
        resp.begin()
        payload = resp.read()
        return Response(resp.status, resp.getheaders(),
                        payload.decode("utf-8", "replace"), time.time() - start)
    finally:
        sock.close()


def echoed(resp):
    """{'status':…, 'code':…, 'visitor':…} from a body made by ECHO."""
    out = {}
    for part in resp.body.split():
        k, _, v = part.partition("=")
        out[k] = v
    for k in ("status", "code", "visitor"):
        out.setdefault(k, "")
    return out


def referral_edge(redis_port, backend):
    """nginx.conf lines of the edge the demo runs: /r/CODE takes the code and
    redirects to /, everything else goes to the backend on port `backend`
    with X-Referral-Code. `{dir}` and `{port}` are left for Nginx."""
    return f"""
    referral_redis 127.0.0.1:{redis_port};
    referral_secret {{dir}}/keys/key1;
    server {{
        listen 127.0.0.1:{{port}};
        referral on;
        location ~ ^/r/(?<c>[^/]+)$ {{ referral_code $c; return 302 /; }}
        location / {{
            proxy_pass http://127.0.0.1:{backend};
            proxy_set_header X-Referral-Code $referral_code;
        }}
    }}
"""


class ClickTraffic:
    """Clicks from a few threads until stop(), each a new visitor
    (`/?ref=PREFIX_THREAD_N`, no cookie). An answer that is 200 and `new`
    (and, with max_elapsed, quicker than that) keeps its visitor; any other
    answer, or an exception, is a failure. Every answer's latency is kept."""

    def __init__(self, port, prefix, threads=3, pause=0.0, max_elapsed=None):
        self.port, self.prefix, self.pause, self.max_elapsed = port, prefix, pause, max_elapsed
        self.visitors, self.failures, self.latencies = [], [], []
        self.lock = _threading.Lock()
        self.done = _threading.Event()
        self.threads = [_threading.Thread(target=self.run, args=(k,)) for k in range(threads)]

    def run(self, k):
        i = 0
        while not self.done.is_set():
            i += 1
            try:
                r = http_request(self.port, f"/?ref={self.prefix}_{k}_{i}")
                v = echoed(r)
                ok = (r.status == 200 and v["status"] == "new" and
                      (self.max_elapsed is None or r.elapsed < self.max_elapsed))
                with self.lock:
                    self.latencies.append(r.elapsed)
                    if ok:
                        self.visitors.append(v["visitor"])
                    else:
                        self.failures.append((r.status, r.elapsed, r.body))
            except Exception as exc:  # noqa: BLE001 - every failure is recorded
                with self.lock:
                    self.failures.append(repr(exc))
            if self.pause:
                time.sleep(self.pause)

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def stop(self):
        self.done.set()
        for t in self.threads:
            t.join()
        return self

    def check_requests(self, max_latency):
        """No request failed, some went through, none took max_latency."""
        assert not self.failures, f"{len(self.failures)} failed requests: {self.failures[:5]}"
        assert self.visitors, "no traffic went through"
        assert max(self.latencies) < max_latency, f"slowest request took {max(self.latencies):.2f}s"


def referral_status(port, path="/status"):
    r = http_request(port, path)
    assert r.status == 200, r
    return _json.loads(r.body)


def wait_events(client, count, key=STREAM, timeout=10.0, settle=0.3):
    """Poll the stream until it holds at least `count` entries, wait `settle`
    seconds more for strays, and return every entry's fields (in order)."""
    deadline = time.time() + timeout
    n = 0
    while time.time() < deadline:
        n = client.cmd("XLEN", key)
        if n >= count:
            break
        time.sleep(0.05)
    if settle:
        time.sleep(settle)
    return [fields for _, fields in client.stream(key)]


def wait_until(predicate, timeout=10.0, step=0.05):
    """Poll predicate() until it returns something true; return that value
    (or the last false one on timeout)."""
    deadline = time.time() + timeout
    value = predicate()
    while not value and time.time() < deadline:
        time.sleep(step)
        value = predicate()
    return value


def new_log(nginx, since):
    """error.log text written after byte offset `since`."""
    return nginx.log()[since:]


def self_signed_cert(directory):
    """A throwaway certificate for https tests: (cert path, key path)."""
    cert = os.path.join(directory, "cert.pem")
    key = os.path.join(directory, "cert.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-subj", "/CN=localhost", "-days", "2", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    return cert, key


def module_http(redis, server="", http="", backend="", root=True):
    """The http{} body most module tests use: Redis at `redis` (the text after
    `referral_redis`), the first key, a server on {port} with `location /`
    (referral on, ECHO) unless root=False, `/status`, the `server` text, and,
    when `backend` is given, a second server on {backend} holding it."""
    root_location = f"        location / {{ referral on; {ECHO} }}\n" if root else ""
    text = f"""
    referral_redis {redis};
    referral_secret {{dir}}/keys/key1;
{http}
    server {{
        listen 127.0.0.1:{{port}};
        location = /status {{ referral_status; }}
{root_location}{server}
    }}
"""
    if backend:
        text += f"""
    server {{
        listen 127.0.0.1:{{backend}};
{backend}
    }}
"""
    return text


def worker_pids(nginx):
    """Pids of the nginx master's children (its workers)."""
    master = nginx.proc.pid
    pids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == master and fields[0] != "Z":
            pids.add(int(entry))
    return pids


def reload_and_wait(nginx, timeout=20.0):
    """`nginx -s reload`, then wait until every worker is a new one."""
    old = worker_pids(nginx)
    nginx.signal("reload")
    ok = wait_until(lambda: (lambda now: now and not (now & old))(worker_pids(nginx)),
                    timeout=timeout)
    assert ok, f"old workers {old} still alive after reload:\n{nginx.log()[-3000:]}"


# ---- worker helpers
# Used by test_worker*.py and test_ctl*.py: a fresh main database on SQLite
# or on a Postgres cluster, events as the module writes them, referralctl.

import sqlite3 as _sqlite3
import uuid as _uuid


class MainDb:
    """A fresh, empty main database: a SQLite file, or a new database in a
    running Postgres cluster. `query` returns rows as tuples of strings."""

    def __init__(self, backend, tmpdir, pg=None):
        self.backend = backend
        if backend == "sqlite":
            self.path = os.path.join(tmpdir, "main.db")
            self.url = "sqlite://" + self.path
        else:
            name = "t_" + _uuid.uuid4().hex[:12]
            pg.query(f"CREATE DATABASE {name}")
            self.url = f"postgresql://{pg.user}@127.0.0.1:{pg.port}/{name}"

    def query(self, sql):
        if self.backend == "sqlite":
            con = _sqlite3.connect(self.path, timeout=10)
            try:
                rows = con.execute(sql).fetchall()
                con.commit()
            finally:
                con.close()
            return [tuple("" if v is None else str(v) for v in r) for r in rows]
        out = subprocess.run(["psql", "-X", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1",
                              self.url, "-c", sql],
                             check=True, capture_output=True, text=True).stdout
        return [tuple(line.split("\t")) for line in out.splitlines() if line]

    def count(self, sql):
        return int(self.query(sql)[0][0])


def ctl(db_url, *args, json_out=False, env=None, check=False):
    """Runs referralctl; returns (exit status, stdout, stderr), stdout parsed
    as JSON with json_out."""
    argv = [CTL]
    if db_url is not None:
        argv += ["--database", db_url]
    if json_out:
        argv.append("--json")
    argv += list(args)
    p = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                       env=env if env is not None else {k: v for k, v in os.environ.items()
                                                        if k != "REFERRAL_DATABASE"})
    if check and p.returncode != 0:
        raise AssertionError(f"referralctl {args} failed ({p.returncode}): {p.stderr}")
    out = p.stdout
    if json_out and out.strip():
        out = _json.loads(out)
    return p.returncode, out, p.stderr


def event_fields(type_="click", code="", id_=None, ts=None, first_ts=None, visitor=None,
                 action=None, user=None, amount="", currency="", order="", **extra):
    """The fields of one event exactly as the module writes them (schema 1)."""
    ts = ts if ts is not None else int(time.time() * 1000)
    fields = {
        "v": "1",
        "id": id_ or _uuid.uuid4().hex,
        "type": type_,
        "ts": str(ts),
        "code": code,
        "visitor": visitor if visitor is not None else (_uuid.uuid4().hex if code else ""),
        "first_ts": str(first_ts if first_ts is not None else ts) if code else "",
        "ip": "203.0.113.7",
        "ua": "Mozilla/5.0 (test)",
        "url": f"/?ref={code}" if code else "/",
        "referer": "",
        "host": "shop.example",
    }
    if type_ == "conversion":
        fields.update({"action": action, "user": user, "amount": str(amount),
                       "currency": currency, "order": order})
    fields.update(extra)
    return fields


def xadd_args(stream, fields):
    args = ["XADD", stream, "*"]
    for k, v in fields.items():
        args += [k, v]
    return args
