"""Debian's headless Chromium driven over the DevTools protocol (python3-
websocket): open a page, wait for it, read the DOM, collect every console
error, uncaught exception and failed load, take a full-page screenshot."""

import base64
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request

import websocket

CHROMIUM = "/usr/bin/chromium"


class Chromium:
    def __init__(self, width=1280, height=900):
        self.width, self.height = width, height
        self.profile = tempfile.mkdtemp(prefix="referral-chromium-")
        self.proc = None
        self.ws = None
        self.next_id = 0
        self.errors = []     # console errors, exceptions, failed loads
        self.messages = []   # every console message, for diagnosis

    def start(self):
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--no-default-browser-check", "--disable-extensions",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--remote-debugging-port=0", "--remote-allow-origins=*", f"--user-data-dir={self.profile}",
             f"--window-size={self.width},{self.height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        port = None
        while time.time() < deadline and port is None:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                raise RuntimeError("chromium exited at start")
            m = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            if m:
                port = int(m.group(1))
        if port is None:
            raise RuntimeError("chromium did not open its DevTools port")
        # keep reading stderr so chromium never blocks on a full pipe
        self._drain = threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True)
        self._drain.start()
        pages = []
        while time.time() < deadline and not pages:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                pages = [t for t in json.load(r) if t["type"] == "page"]
            if not pages:
                time.sleep(0.1)
        self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=60,
                                              suppress_origin=True)
        for method in ("Runtime.enable", "Log.enable", "Page.enable", "Network.enable"):
            self.call(method)
        self.call("Emulation.setDeviceMetricsOverride",
                  width=self.width, height=self.height, deviceScaleFactor=1, mobile=False)
        return self

    def close(self):
        if self.ws:
            try:
                self.call("Browser.close")
            except Exception:
                pass
            self.ws.close()
        if self.proc:
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self._drain.join(timeout=5)
        shutil.rmtree(self.profile, ignore_errors=True)

    # ------------------------------------------------------------ protocol

    def _event(self, msg):
        method, p = msg.get("method"), msg.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
            self.messages.append(f"console.{p.get('type')}: {text}")
            if p.get("type") in ("error", "assert"):
                self.errors.append(f"console.{p['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            self.errors.append("exception: " + d.get("exception", {}).get("description", d.get("text", "")))
        elif method == "Log.entryAdded":
            e = p.get("entry", {})
            self.messages.append(f"log.{e.get('level')}: {e.get('text')} {e.get('url', '')}")
            if e.get("level") == "error":
                self.errors.append(f"log: {e.get('text')} {e.get('url', '')}")
        elif method == "Network.loadingFailed":
            if not p.get("canceled"):
                self.errors.append(f"load failed: {p.get('errorText')} {p.get('blockedReason', '')}")

    def call(self, method, **params):
        self.next_id += 1
        my = self.next_id
        self.ws.send(json.dumps({"id": my, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == my:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self._event(msg)

    def pump(self, seconds):
        """Reads events for a while (console messages arrive on their own)."""
        self.ws.settimeout(0.1)
        end = time.time() + seconds
        try:
            while time.time() < end:
                try:
                    self._event(json.loads(self.ws.recv()))
                except websocket.WebSocketTimeoutException:
                    pass
        finally:
            self.ws.settimeout(60)

    # ---------------------------------------------------------------- pages

    def headers(self, headers):
        self.call("Network.setExtraHTTPHeaders", headers=headers)

    def open(self, url):
        self.call("Page.navigate", url=url)

    def eval(self, expression):
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait_for(self, expression, timeout=30.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if self.eval(expression):
                    return
            except RuntimeError:
                pass  # the page is still being replaced
            self.pump(0.1)
        raise TimeoutError(f"{expression} never became true; console: {self.messages} errors: {self.errors}")

    def screenshot(self, path):
        """The whole page, as tall as its content."""
        h = int(self.eval("Math.ceil(document.documentElement.scrollHeight)") or self.height)
        self.call("Emulation.setDeviceMetricsOverride", width=self.width, height=max(h, 200),
                  deviceScaleFactor=1, mobile=False)
        self.pump(0.3)  # charts redraw at the new size
        data = self.call("Page.captureScreenshot", format="png")["data"]
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
        self.call("Emulation.setDeviceMetricsOverride", width=self.width, height=self.height,
                  deviceScaleFactor=1, mobile=False)
        return path
