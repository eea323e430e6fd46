"""A local stand-in for the parts of the Stripe API the referral-worker uses,
and a receiver for the application webhooks it sends.

Stripe cannot be reached from the test machines, so FakeStripe serves, on
127.0.0.1, the documented endpoints SPEC.md "Delivery to Stripe and to the
application" names, with Stripe's documented semantics (auth, form bodies,
errors, idempotency), plus fault injection to exercise the worker's retries.
Standard library only; each server runs in a background thread of the test
process.  Pages cited below are docs.stripe.com unless said otherwise:

  [idem]   /api/idempotent_requests and /idempotency
  [errlow] /error-low-level (content, network and server errors; 409/429)
  [errors] /api/errors (the error object and its types)
  [auth]   /api/authentication
  [cbt]    /api/customer_balance_transactions/create and .../object
  [cus]    /api/customers/object
  [coupon] /api/coupons/create
  [promo]  /api/promotion_codes/create, .../update, .../retrieve
  [sig]    /webhooks (the Stripe-Signature scheme; "t=...,v1=...")
"""

import hashlib
import hmac
import json
import re
import secrets
import socket
import string
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

MAX_BODY = 1 << 20
DEFAULT_VERSION = "2024-06-20"


def _rand(n, alphabet=string.ascii_letters + string.digits):
    return "".join(secrets.choice(alphabet) for _ in range(n))


# --------------------------------------------------------------- servers --

class _Server(ThreadingHTTPServer):
    """A ThreadingHTTPServer that can also drop the keep-alive connections it
    is serving, so that a stopped server really stops answering."""
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port, handler, owner):
        self.owner = owner
        self._conns = set()
        self._conns_lock = threading.Lock()
        super().__init__(("127.0.0.1", port), handler)

    def process_request(self, request, client_address):
        with self._conns_lock:
            self._conns.add(request)
            self.owner.connections += 1  # TCP connections accepted: keep-alive tests
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def drop_connections(self):
        with self._conns_lock:
            conns = list(self._conns)
        for sock in conns:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive: every answer has a Content-Length."""
    protocol_version = "HTTP/1.1"
    timeout = 60  # an idle keep-alive connection is closed after this
    # Headers and body go out in two writes: without TCP_NODELAY, Nagle
    # and the client's delayed ACK hold every answer back ~40 ms.
    disable_nagle_algorithm = True

    def log_message(self, format, *args):  # quiet; the owner records requests
        pass

    def read_body(self):
        """The request body, or None after answering 400/411/413 ourselves."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            self.answer(411, {"error": "chunked bodies are not supported"})
            return None
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            self.close_connection = True
            self.answer(413 if length > 0 else 400, {"error": "bad Content-Length"})
            return None
        return self.rfile.read(length) if length else b""

    def answer(self, status, obj, headers=None):
        data = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def abort(self):
        """Close the connection without a single response byte."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _Background:
    """Runs a _Server in a daemon thread: start(), close(), url, port, and
    .connections, the number of TCP connections it accepted."""
    handler = None

    def __init__(self, port=None):
        self.port = port or 0
        self._server = None
        self._thread = None
        self.connections = 0  # accepted since creation (across stop/start)

    def start(self):
        self._server = _Server(self.port, self.handler, self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def close(self):
        if self._server is None:
            return
        self._server.shutdown()
        self._server.drop_connections()
        self._server.server_close()
        self._thread.join()
        self._server = self._thread = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()


# ----------------------------------------------------------- Stripe fake --

@dataclass
class Request:
    method: str
    path: str
    headers: dict          # names lowercased
    params: dict           # raw bracketed keys: {"metadata[reward_id]": "7"}
    body: bytes
    time: float
    status: int = None     # None: the connection was closed without answer
    replayed: bool = False
    problem: str = None    # why the body could not be read as a form


@dataclass
class Result:
    status: int
    body: dict
    headers: dict = field(default_factory=dict)


def _error(status, type_, message, code=None, param=None, headers=None):
    """Stripe's error object [errors]: type, message, optional code/param."""
    err = {"type": type_, "message": message}
    if code:
        err["code"] = code
    if param:
        err["param"] = param
    return Result(status, {"error": err}, dict(headers or {}))


class _Invalid(Exception):
    """Rejected before the endpoint executes: never saved for an idempotency
    key [idem] ("If incoming parameters fail validation ... no idempotent
    result is saved"; [errlow]: "most 400s that sent invalid parameters")."""
    def __init__(self, result):
        self.result = result


class _Failed(Exception):
    """Failed while the endpoint executed: saved and replayed like a success
    [errlow] ("as long as an API method began execution, Stripe's API servers
    will cache the results of the request regardless of what they were")."""
    def __init__(self, result):
        self.result = result


def _bad(message, param=None, code=None):
    return _Invalid(_error(400, "invalid_request_error", message, code, param))


class _Form:
    """Validation of form parameters the way Stripe words its 400s."""

    def __init__(self, params, allowed):
        self.p = params
        for key in params:  # Stripe rejects what it does not know
            base = key.split("[", 1)[0]
            if base not in allowed or ("[" in key and base not in ("metadata", "expand")):
                raise _bad(f"Received unknown parameter: {key}", key, "parameter_unknown")

    def string(self, name, required=False):
        v = self.p.get(name)
        if v is None and required:
            raise _bad(f"Missing required param: {name}.", name, "parameter_missing")
        return v

    def integer(self, name, required=False, minimum=None):
        v = self.string(name, required)
        if v is None:
            return None
        if not re.fullmatch(r"-?[0-9]{1,15}", v):
            raise _bad(f"Invalid integer: {v}", name, "parameter_invalid_integer")
        if minimum is not None and int(v) < minimum:
            raise _bad(f"This value must be greater than or equal to {minimum}.", name)
        return int(v)

    def currency(self, name, required=False):
        # [cbt]: "Three-letter ISO currency code, in lowercase."  Stripe itself
        # also takes "USD"; the fake insists on the documented form.
        v = self.string(name, required)
        if v is not None and not re.fullmatch(r"[a-z]{3}", v):
            raise _bad(f"Invalid currency: {v}.", name)
        return v

    def boolean(self, name):
        v = self.string(name)
        if v not in (None, "true", "false"):
            raise _bad(f"Invalid boolean: {v}", name)
        return None if v is None else v == "true"

    def metadata(self, old=None):
        # Metadata: metadata[key]=value; an empty value unsets the key.
        md = dict(old or {})
        for key, value in self.p.items():
            m = re.fullmatch(r"metadata\[([^\[\]]{1,40})\]", key)
            if m and value == "":
                md.pop(m.group(1), None)
            elif m:
                md[m.group(1)] = value[:500]
            elif key.startswith("metadata"):
                raise _bad(f"Invalid metadata key: {key}", key)
        return md


_FAULTS = ("500", "429", "close_after_apply", "slow", "400", "should_retry_false")


@dataclass
class _Fault:
    kind: str
    left: int
    opts: dict

    def matches(self, method, path):
        return (path.startswith(self.opts.get("path", "")) and
                self.opts.get("method", method) == method)

    def result(self):
        """The error answer of an error fault (none for slow/close)."""
        msg = self.opts.get("message")
        if self.kind == "500":
            return _error(500, "api_error", msg or "An unknown error occurred")
        if self.kind == "should_retry_false":
            return _error(500, "api_error", msg or "An unknown error occurred",
                          headers={"Stripe-Should-Retry": "false"})
        if self.kind == "429":
            return _error(429, "rate_limit_error",
                          msg or "Too many requests hit the API too quickly.",
                          code="rate_limit",
                          headers={"Retry-After": self.opts.get("retry_after", 1)})
        if self.kind == "400":
            return _error(400, "invalid_request_error", msg or "Injected error")
        return None


_IN_PROGRESS = object()


class FakeStripe(_Background):
    """Serves, on http://127.0.0.1:PORT:
      POST /v1/customers, GET /v1/customers/{cus},
      POST /v1/customers/{cus}/balance_transactions,
      POST /v1/coupons,
      POST /v1/promotion_codes, POST|GET /v1/promotion_codes/{id}.
    State is guarded by one lock; handler threads share it."""

    def __init__(self, api_key="sk_test_fake_4eC39HqLyjWDarjtT1zdp7dc", port=None):
        super().__init__(port)
        self.api_key = api_key
        self._lock = threading.RLock()
        self._customers = {}
        self._txns = []
        self._coupons = {}
        self._promos = {}
        self._idem = {}       # key -> (fingerprint, Result) or (fp, _IN_PROGRESS)
        self._faults = []
        self.requests = []
        self.versions_seen = set()  # Stripe-Version values; None = header absent
        self.errors = []            # exceptions raised by the fake itself

    # ---- helpers for tests
    def add_customer(self, id=None, **fields):
        with self._lock:
            cid = id or "cus_" + _rand(14)
            self._customers[cid] = {
                "id": cid, "object": "customer", "balance": 0, "currency": None,
                "created": int(time.time()), "livemode": False, "metadata": {},
                "email": None, "name": None, "description": None, **fields}
            return cid

    def balance(self, cus):
        with self._lock:
            return self._customers[cus]["balance"]

    def balance_transactions(self, cus=None):
        with self._lock:
            return [dict(t) for t in self._txns if cus in (None, t["customer"])]

    @property
    def coupons(self):
        with self._lock:
            return json.loads(json.dumps(self._coupons))

    @property
    def promotion_codes(self):
        with self._lock:
            return json.loads(json.dumps(self._promos))

    def count(self, method, path_prefix=""):
        with self._lock:
            return sum(1 for r in self.requests
                       if r.method == method and r.path.startswith(path_prefix))

    def idempotency_state(self, key):
        """None (unknown key), "in_progress", or the saved answer's status."""
        with self._lock:
            saved = self._idem.get(key)
        if saved is None:
            return None
        return "in_progress" if saved[1] is _IN_PROGRESS else saved[1].status

    def fail_next(self, n, kind, **opts):
        """The next n matching requests get fault `kind` (see _FAULTS); opts:
        path (prefix), method, message, retry_after (429), seconds (slow),
        saved (error kinds: True = the error happens once the endpoint runs,
        so it is saved for the idempotency key and replayed [idem]; default
        False = it happens in front of the idempotency layer, as a 429 does
        [errlow], and a retry with the same key executes afresh)."""
        if kind not in _FAULTS:
            raise ValueError(f"unknown fault kind {kind!r}")
        if kind == "slow" and "seconds" not in opts:
            raise ValueError("slow needs seconds=")
        with self._lock:
            self._faults.append(_Fault(kind, n, opts))

    def faults_pending(self):
        with self._lock:
            return sum(f.left for f in self._faults)

    def _take_fault(self, method, path):
        with self._lock:
            for f in self._faults:
                if f.left > 0 and f.matches(method, path):
                    f.left -= 1
                    return f
        return None

    # ---- request pipeline
    def _handle(self, req):
        """-> (Result, close_without_answer)."""
        # [auth]: a secret key as a Bearer token; 401 otherwise.
        auth = req.headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return _error(401, "invalid_request_error",
                          "You did not provide an API key. You need to provide your API "
                          "key in the Authorization header, using Bearer auth (e.g. "
                          "'Authorization: Bearer YOUR_SECRET_KEY')."), False
        given = auth[len("Bearer "):]
        if not hmac.compare_digest(given.encode(), self.api_key.encode()):
            shown = given[:8] + "*" * max(0, len(given) - 12) + given[-4:]
            return _error(401, "invalid_request_error",
                          f"Invalid API Key provided: {shown}"), False

        if req.problem:  # a body we cannot read is rejected before anything
            return _error(400, "invalid_request_error", req.problem), False

        fault = self._take_fault(req.method, req.path)
        if fault and fault.result() and not fault.opts.get("saved"):
            return fault.result(), False
        close = bool(fault and fault.kind == "close_after_apply")

        # [idem]: POSTs only; the first result is saved with its parameters.
        key = req.headers.get("idempotency-key") if req.method == "POST" else None
        fp = (req.path, tuple(sorted(req.params.items())))
        if key is not None:
            if len(key) > 255:
                return _error(400, "invalid_request_error",
                              "Idempotency key is too long; the maximum length is "
                              "255 characters.", param="Idempotency-Key"), False
            with self._lock:
                saved = self._idem.get(key)
                if saved and saved[0] != fp:
                    return _error(400, "idempotency_error",
                                  "Keys for idempotent requests can only be used with the "
                                  "same parameters they were first used with. Try using a "
                                  f"key other than '{key}' if you meant to execute a "
                                  "different request."), False
                if saved and saved[1] is _IN_PROGRESS:
                    # [errlow]: 409 Conflict for a key that is in use right now.
                    return _error(409, "idempotency_error",
                                  "There is currently another in-progress request using "
                                  "this Idempotent Key (that probably means you submitted "
                                  "twice, and the other request is still going through): "
                                  f"{key}. Please try again later.",
                                  code="idempotency_key_in_use"), False
                if saved:
                    r = saved[1]
                    req.replayed = True
                    return Result(r.status, r.body,
                                  {**r.headers, "Idempotent-Replayed": "true"}), close
                self._idem[key] = (fp, _IN_PROGRESS)

        store = False
        try:
            if fault and fault.kind == "slow":
                time.sleep(fault.opts["seconds"])
            if fault and fault.result():      # a saved=True error fault
                raise _Failed(fault.result())
            with self._lock:  # a copy: later changes must not alter saved answers
                result = Result(200, json.loads(json.dumps(self._route(req))))
            store = True
        except _Invalid as e:
            result = e.result
        except _Failed as e:
            result, store = e.result, True
        except Exception as e:  # a bug in the fake: visible in .errors
            self.errors.append(e)
            result = _error(500, "api_error", f"fake_stripe: {e!r}")
        finally:
            if key is not None:
                with self._lock:
                    if store:
                        self._idem[key] = (fp, result)
                    else:
                        del self._idem[key]
        return result, close

    def _route(self, req):
        m, p = req.method, req.path
        for method, pattern, fn in self._ROUTES:
            match = re.fullmatch(pattern, p)
            if match and method == m:
                return fn(self, req.params, *match.groups())
        raise _Invalid(_error(404, "invalid_request_error",
                              f"Unrecognized request URL ({m}: {p}). Please see "
                              "https://stripe.com/docs or we can help at "
                              "https://support.stripe.com/."))

    def _customer(self, cid, in_url=True):
        c = self._customers.get(cid)
        if c is None:  # a missing URL object is a 404; a missing param a 400
            raise _Failed(_error(404 if in_url else 400, "invalid_request_error",
                                 f"No such customer: '{cid}'", "resource_missing",
                                 "id" if in_url else "customer"))
        return c

    # ---- endpoints (run under self._lock; _Invalid before any change)
    def _create_customer(self, params):
        f = _Form(params, {"email", "name", "description", "balance", "metadata", "expand"})
        fields = {k: f.string(k) for k in ("email", "name", "description")}
        balance = f.integer("balance") or 0
        cid = self.add_customer(metadata=f.metadata(), balance=balance, **fields)
        return self._customers[cid]

    def _get_customer(self, params, cid):
        _Form(params, {"expand"})
        return self._customer(cid)

    def _create_balance_txn(self, params, cid):
        # [cbt]: amount (integer, required; negative = a credit, which lowers
        # the balance), currency (required), description, metadata.  The
        # object carries the customer's ending_balance.
        f = _Form(params, {"amount", "currency", "description", "metadata", "expand"})
        amount = f.integer("amount", required=True)
        currency = f.currency("currency", required=True)
        description = f.string("description")
        metadata = f.metadata()
        c = self._customer(cid)
        # [cus]: the customer's currency is fixed by its first balance entry
        # (the message's wording is ours).
        if c["currency"] not in (None, currency):
            raise _Failed(_error(400, "invalid_request_error",
                                 f"You cannot use a different currency ({currency}) "
                                 f"than the customer's currency ({c['currency']}).",
                                 param="currency"))
        c["currency"] = currency
        c["balance"] += amount
        txn = {"id": "cbtxn_" + _rand(24), "object": "customer_balance_transaction",
               "amount": amount, "currency": currency, "customer": cid,
               "description": description, "metadata": metadata,
               "ending_balance": c["balance"], "created": int(time.time()),
               "credit_note": None, "invoice": None, "livemode": False,
               "type": "adjustment"}
        self._txns.append(txn)
        return txn

    def _create_coupon(self, params):
        # [coupon]: an amount_off coupon (the only kind SPEC.md makes) needs
        # currency; duration defaults to once.  Stripe also takes percent_off.
        f = _Form(params, {"name", "amount_off", "currency", "duration",
                           "max_redemptions", "metadata", "expand"})
        amount_off = f.integer("amount_off", required=True, minimum=1)
        currency = f.currency("currency", required=True)
        duration = f.string("duration") or "once"
        if duration not in ("once", "repeating", "forever"):
            raise _bad(f"Invalid duration: {duration}", "duration")
        coupon = {"id": _rand(8), "object": "coupon", "amount_off": amount_off,
                  "percent_off": None, "currency": currency, "duration": duration,
                  "max_redemptions": f.integer("max_redemptions", minimum=1),
                  "times_redeemed": 0, "valid": True, "name": f.string("name"),
                  "metadata": f.metadata(), "created": int(time.time()),
                  "livemode": False}
        self._coupons[coupon["id"]] = coupon
        return coupon

    def _create_promo(self, params):
        # [promo]: coupon (required, must exist), customer (optional, must
        # exist: the code is then restricted to it), max_redemptions, code
        # (random when absent), active.  Newer API versions take
        # promotion[coupon]; SPEC.md names `coupon`, which is what we serve.
        f = _Form(params, {"coupon", "customer", "max_redemptions", "code", "active",
                           "metadata", "expand"})
        coupon_id = f.string("coupon", required=True)
        customer = f.string("customer")
        max_red = f.integer("max_redemptions", minimum=1)
        active = f.boolean("active")
        code = f.string("code") or _rand(8, string.ascii_uppercase + string.digits)
        metadata = f.metadata()
        if coupon_id not in self._coupons:
            raise _Failed(_error(400, "invalid_request_error",
                                 f"No such coupon: '{coupon_id}'", "resource_missing",
                                 "coupon"))
        if customer is not None:
            self._customer(customer, in_url=False)
        if any(p["code"] == code and p["active"] for p in self._promos.values()):
            raise _Failed(_error(400, "invalid_request_error",
                                 f"An active promotion code with `code: {code}` "
                                 "already exists.", param="code"))
        pid = "promo_" + _rand(24)
        self._promos[pid] = {
            "id": pid, "object": "promotion_code", "code": code,
            "active": True if active is None else active,
            "coupon": dict(self._coupons[coupon_id]), "customer": customer,
            "max_redemptions": max_red, "times_redeemed": 0, "metadata": metadata,
            "created": int(time.time()), "livemode": False}
        return self._promos[pid]

    def _promo(self, pid):
        if pid not in self._promos:
            raise _Failed(_error(404, "invalid_request_error",
                                 f"No such promotion code: '{pid}'", "resource_missing",
                                 "id"))
        return self._promos[pid]

    def _update_promo(self, params, pid):
        f = _Form(params, {"active", "metadata", "expand"})
        active = f.boolean("active")
        promo = self._promo(pid)
        promo["metadata"] = f.metadata(promo["metadata"])
        if active is not None:
            promo["active"] = active
        return promo

    def _get_promo(self, params, pid):
        _Form(params, {"expand"})
        return self._promo(pid)

    _ROUTES = [
        ("POST", r"/v1/customers", _create_customer),
        ("GET", r"/v1/customers/([^/]+)", _get_customer),
        ("POST", r"/v1/customers/([^/]+)/balance_transactions", _create_balance_txn),
        ("POST", r"/v1/coupons", _create_coupon),
        ("POST", r"/v1/promotion_codes", _create_promo),
        ("POST", r"/v1/promotion_codes/([^/]+)", _update_promo),
        ("GET", r"/v1/promotion_codes/([^/]+)", _get_promo),
    ]


class _StripeHandler(_Handler):
    def do_GET(self):
        self.serve()

    def do_POST(self):
        self.serve()

    do_DELETE = do_GET

    def serve(self):
        fake = self.server.owner
        body = self.read_body()
        if body is None:
            return
        url = urlsplit(self.path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        req = Request(self.command, url.path, headers, {}, body, time.time())
        raw = body if self.command == "POST" else url.query.encode()
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        if self.command == "POST" and body and ctype != "application/x-www-form-urlencoded":
            # Stripe's v1 API takes form-encoded bodies only.
            req.problem = (f"Invalid request: unsupported Content-Type {ctype or '(none)'}. "
                           "If error persists and you need assistance, please contact "
                           "support@stripe.com.")
        else:
            try:
                req.params = dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True,
                                            strict_parsing=True))
            except (UnicodeDecodeError, ValueError) as e:
                req.problem = f"Invalid request body: {e}"
        with fake._lock:
            fake.requests.append(req)
            fake.versions_seen.add(headers.get("stripe-version"))
        result, close = fake._handle(req)
        if close:
            self.abort()
            return
        req.status = result.status
        self.answer(result.status, result.body, {
            "Request-Id": "req_" + _rand(14),
            "Stripe-Version": headers.get("stripe-version", DEFAULT_VERSION),
            **result.headers})


FakeStripe.handler = _StripeHandler


# --------------------------------------------------------------- webhooks --

def sign(secret: bytes, body: bytes, t=None):
    """The Referral-Signature header value for body: Stripe's scheme [sig]."""
    t = int(time.time()) if t is None else t
    mac = hmac.new(secret, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(secret: bytes, body: bytes, header, tolerance=300, now=None):
    """None when header signs body with secret within tolerance seconds,
    else the reason it does not.  Written from the scheme, not from the SDK."""
    if not header:
        return "no Referral-Signature header"
    t, sigs = None, []
    for item in header.split(","):
        k, _, v = item.strip().partition("=")
        if k == "t" and re.fullmatch(r"[0-9]{1,12}", v):
            t = int(v)
        elif k == "v1":
            sigs.append(v)
    if t is None or not sigs:
        return f"malformed header {header[:100]!r}"
    now = time.time() if now is None else now
    if abs(now - t) > tolerance:
        return f"timestamp {t} outside the {tolerance} s tolerance"
    want = hmac.new(secret, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    if not any(hmac.compare_digest(want.encode(), s.encode()) for s in sigs):
        return "no v1 signature matches"
    return None


def verify_with_stripe_sdk(body: bytes, header, secret: bytes, tolerance=300):
    """Stripe's own SDK on the same delivery: True/False, None when the
    python3-stripe package is missing.  stripe 5's verify_header takes str."""
    try:
        import stripe
    except ImportError:
        return None
    try:
        return stripe.WebhookSignature.verify_header(
            body.decode("utf-8"), header, secret.decode("utf-8"), tolerance)
    except (stripe.error.SignatureVerificationError, UnicodeDecodeError):
        return False


@dataclass
class Delivery:
    path: str
    headers: dict          # names lowercased
    body: bytes
    time: float
    status: int            # what the receiver answered
    reason: str = None     # why it did not verify (None: verified)
    json: object = None


class WebhookReceiver(_Background):
    """Records webhook POSTs and checks their Referral-Signature.
    .deliveries: every POST; .events: parsed bodies that verified (answered
    200); .bad: Deliveries that did not verify (answered 400).  .down(True):
    answer 503; .fail_next(n, status); .stop()/.start(): refuse connections,
    then listen again on the same port."""

    def __init__(self, secret: bytes, port=None, tolerance=300):
        super().__init__(port)
        self.secret = secret
        self.tolerance = tolerance
        self._lock = threading.Lock()
        self._down = False
        self._fail = []
        self.deliveries = []
        self.events = []
        self.bad = []

    verify_with_stripe_sdk = staticmethod(verify_with_stripe_sdk)

    def down(self, flag=True):
        with self._lock:
            self._down = flag

    def fail_next(self, n, status=500):
        with self._lock:
            self._fail += [status] * n

    def stop(self):
        self.close()

    def _receive(self, path, headers, body):
        d = Delivery(path, headers, body, time.time(), 200)
        with self._lock:
            self.deliveries.append(d)
            if self._down:
                d.status, d.reason = 503, "receiver down"
                return d
            if self._fail:
                d.status, d.reason = self._fail.pop(0), "injected failure"
                return d
            d.reason = verify(self.secret, body, headers.get("referral-signature"),
                              self.tolerance)
            if d.reason is None:
                try:
                    d.json = json.loads(body)
                except ValueError as e:
                    d.reason = f"body is not JSON: {e}"
            if d.reason is None:
                self.events.append(d.json)
            else:
                d.status = 400
                self.bad.append(d)
        return d


class _WebhookHandler(_Handler):
    def do_POST(self):
        body = self.read_body()
        if body is None:
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        d = self.server.owner._receive(self.path, headers, body)
        self.answer(d.status, {"received": d.status == 200})


WebhookReceiver.handler = _WebhookHandler
