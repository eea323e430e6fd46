"""`referralctl serve` for the tests: started on a free 127.0.0.1 port with a
token file and a worker config file (redis, stream, group, link_base), and
a small HTTP client that sends the token."""

import base64
import http.client
import json
import os
import secrets
import signal
import subprocess
import time

from harness import CTL, free_port, wait_port

LINK_BASE = "https://example.com/r/"


class ApiServer:
    def __init__(self, tmpdir, db_url, redis_url="redis://127.0.0.1:1", stream="referral:events",
                 group="referral-workers", link_base=LINK_BASE, extra_args=(), extra_config=""):
        self.token = secrets.token_hex(24)
        self.dir = tmpdir
        self.token_file = os.path.join(tmpdir, "api.token")
        with open(self.token_file, "w") as f:
            f.write(self.token + "\n")
        self.config = os.path.join(tmpdir, "serve.toml")
        with open(self.config, "w") as f:
            f.write(f'redis = "{redis_url}"\nstream = "{stream}"\ngroup = "{group}"\n')
            if link_base:
                f.write(f'link_base = "{link_base}"\n')
            f.write(extra_config)
        self.port = free_port()
        self.log_path = os.path.join(tmpdir, f"serve-{self.port}.log")
        self.argv = [CTL, "--config", self.config, "--database", db_url, "serve",
                     "--listen", f"127.0.0.1:{self.port}", "--token-file", self.token_file, *extra_args]
        self.proc = None

    def start(self):
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.argv, stdout=self.log, stderr=subprocess.STDOUT)
        try:
            wait_port(self.port)
        except TimeoutError:
            self.proc.kill()
            raise AssertionError("referralctl serve did not start: " + open(self.log_path).read())
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            rc = self.proc.wait(timeout=20)
            assert rc == 0, f"referralctl serve exited {rc}: " + open(self.log_path).read()
        if self.proc:
            self.log.close()

    def request(self, method, path, body=None, auth="bearer", headers=None, raw_body=None):
        """(status, headers dict lowercased, parsed JSON or text)."""
        h = dict(headers or {})
        if auth == "bearer":
            h["Authorization"] = f"Bearer {self.token}"
        elif auth == "basic":
            h["Authorization"] = "Basic " + base64.b64encode(f"growth:{self.token}".encode()).decode()
        elif auth:
            h["Authorization"] = auth
        data = raw_body
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        if data is None and method in ("POST", "PUT", "PATCH", "DELETE"):
            data = b""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            c.request(method, path, body=data, headers=h)
            r = c.getresponse()
            text = r.read().decode("utf-8", "replace")
            hdrs = {k.lower(): v for k, v in r.getheaders()}
        finally:
            c.close()
        out = text
        if hdrs.get("content-type", "").startswith("application/json"):
            out = json.loads(text)
        return r.status, hdrs, out

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body=body, **kw)


def wait_until_stopped(proc, timeout=20):
    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    return proc.poll()
