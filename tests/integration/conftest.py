"""Shared fixtures for the integration tests: a real redis-server, a
throwaway PostgreSQL cluster and Debian's nginx with the built module, on
free 127.0.0.1 ports, stopped after use; every nginx's error.log must be
free of [alert]/[emerg]/[crit]/sanitizer lines when the test ends."""

import os
import shutil
import tempfile

import pytest

from harness import MODULE, Nginx, Postgres, RedisServer, free_port, module_http


@pytest.fixture(scope="module")
def pg():
    """One PostgreSQL cluster per test file; each test makes its own database."""
    p = Postgres().start()
    yield p
    p.close()


@pytest.fixture
def tmp():
    """A scratch directory every user can enter (nginx workers, postgres)."""
    d = tempfile.mkdtemp(prefix="referral-test-")
    os.chmod(d, 0o777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def module_built():
    if not os.path.exists(MODULE):
        pytest.fail(f"{MODULE} is missing: build the module first (./build.sh)")


@pytest.fixture
def redis():
    server = RedisServer().start()
    yield server
    server.close()


@pytest.fixture
def rc(redis):
    client = redis.client()
    yield client
    client.close()


@pytest.fixture
def make_nginx(module_built):
    """make_nginx(http, workers=1, main="", start=True, backend_port=None):
    an Nginx whose http{} is `http`; "{backend}" becomes a free port
    (nginx.backend_port)."""
    made = []

    def make(http, workers=1, main="", start=True):
        backend_port = free_port()
        n = Nginx(http.replace("{backend}", str(backend_port)), workers=workers, main=main)
        n.backend_port = backend_port
        made.append(n)
        if start:
            n.start()
        return n

    yield make
    for n in made:
        n.stop()
    try:
        for n in made:
            n.assert_clean_log()
    finally:
        for n in made:
            n.close()


@pytest.fixture
def edge(make_nginx, redis):
    """edge(server="", http="", backend="", root=True, redis_addr=None, **nginx):
    the usual module configuration (harness.module_http) against `redis`."""
    def make(server="", http="", backend="", root=True, redis_addr=None, **kw):
        addr = redis_addr or f"127.0.0.1:{redis.port}"
        return make_nginx(module_http(addr, server=server, http=http, backend=backend,
                                      root=root), **kw)
    return make
