#!/usr/bin/env python3
# Copyright (c) the convstore authors.
# SPDX-License-Identifier: MIT
"""End-to-end test of the assistant_server web UI in headless Chromium.

    ui_test.py --url http://127.0.0.1:8080         # a server already running
    ui_test.py --server-bin PATH --backend sqlite  # starts the built server
    ui_test.py --server-bin PATH --backend postgresql   # on CONVSTORE_TEST_PG_URL

Seeds review-mode conversations through the JSON API (each user message
leaves a pending suggestion), loads the page served at GET / in Debian's
chromium (--headless=new), drives it through the DevTools protocol (a small
WebSocket client written here: only the standard library) with real mouse
clicks and typed text, and checks every outcome through the API:
  - the user is found in the user list and their 4 pending replies shown,
    with the conversation's messages as context, all text escaped;
  - approve: the suggestion is sent, the reply stored as the assistant's message;
  - edit then approve: the edited text is what is stored and sent;
  - reject with a reason: rejected with that reason, no assistant message;
  - an action the server refuses (a reply rejected behind the page's back):
    the API's error category and status are shown, nothing changes;
  - the conversation browser: user and status filters, paging by
    next_cursor, a transcript with the edited reply;
  - no duplicate element id, every form field labelled, every button named;
    after an action the focus moves to the next reply.
Any uncaught JavaScript exception in the page fails the test.

Bounded: every wait has a deadline within a 55-second budget (a passing run
takes about 6 s; ctest's timeout is 120 s); the server and chromium (its whole process group) are killed at the end and the
temporary profile and database are removed.

Exit status: 0 passed, 1 failed, 77 skipped (chromium missing, or PostgreSQL
not configured, when CI is not "true").
"""

import argparse
import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
import uuid

SKIP = 77
BUDGET_SECONDS = 100.0
START = time.monotonic()


class Failure(Exception):
    pass


def log(msg):
    print(f"[ui_test {time.monotonic() - START:5.1f}s] {msg}", flush=True)


def time_left():
    return BUDGET_SECONDS - (time.monotonic() - START)


def deadline(seconds):
    """A deadline `seconds` from now, never past the test's budget."""
    return time.monotonic() + max(0.0, min(seconds, time_left()))


def skip_or_fail(reason):
    if os.environ.get("CI") == "true":
        print(f"ui_test: FAILED: {reason} (CI=true requires this test to run)", file=sys.stderr)
        sys.exit(1)
    print(f"ui_test: SKIPPED: {reason}", file=sys.stderr)
    sys.exit(SKIP)


def mask_url(url):
    """The URL without its password, for messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(":" + parts.password + "@", ":***@")
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return url


# ------------------------------------------------------------------ the API


class Api:
    def __init__(self, base):
        self.base = base.rstrip("/")

    def call(self, method, path, body=None, expect=(200, 201)):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=max(1.0, min(10.0, time_left()))) as res:
                status, raw = res.status, res.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        if expect and status not in expect:
            raise Failure(f"{method} {path} -> HTTP {status}, expected {expect}: {parsed}")
        return status, parsed

    def get(self, path):
        return self.call("GET", path)[1]

    def post(self, path, body):
        return self.call("POST", path, body)[1]


# ------------------------------------------------- a minimal WebSocket client


class WebSocket:
    """RFC 6455 client: text frames out (masked), any frames in."""

    def __init__(self, url, timeout):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "ws":
            raise Failure(f"unexpected DevTools URL {url}")
        self.sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        path = parts.path + (("?" + parts.query) if parts.query else "")
        request = (f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n")
        self.sock.sendall(request.encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise Failure("DevTools closed the WebSocket handshake")
            self.buffer += chunk
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode(errors="replace").split("\r\n")
        if " 101 " not in lines[0] + " ":
            raise Failure(f"DevTools refused the WebSocket: {lines[0]}")
        accept = base64.b64encode(
            hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        headers = {k.strip().lower(): v.strip() for k, v in
                   (line.split(":", 1) for line in lines[1:] if ":" in line)}
        if headers.get("sec-websocket-accept") != accept:
            raise Failure("DevTools sent a wrong Sec-WebSocket-Accept")

    def _send_frame(self, opcode, payload):
        header = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def send(self, text):
        self._send_frame(0x1, text.encode())

    def _read(self, n):
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise Failure("DevTools closed the WebSocket")
            self.buffer += chunk
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def recv(self, until):
        """The next text message; Failure when `until` (monotonic) passes."""
        message = b""
        while True:
            left = until - time.monotonic()
            if left <= 0:
                raise Failure("timed out waiting for DevTools")
            self.sock.settimeout(left)
            try:
                b0, b1 = self._read(2)
                n = b1 & 0x7F
                if n == 126:
                    n = struct.unpack("!H", self._read(2))[0]
                elif n == 127:
                    n = struct.unpack("!Q", self._read(8))[0]
                mask = self._read(4) if b1 & 0x80 else None
                payload = self._read(n)
            except socket.timeout:
                raise Failure("timed out waiting for DevTools") from None
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            opcode = b0 & 0x0F
            if opcode == 0x8:
                raise Failure("DevTools closed the WebSocket")
            if opcode == 0x9:
                self._send_frame(0xA, payload)
                continue
            if opcode in (0x0, 0x1, 0x2):
                message += payload
                if b0 & 0x80:
                    return message.decode()

    def close(self):
        try:
            self._send_frame(0x8, b"")
        except OSError:
            pass
        self.sock.close()


# ------------------------------------------------------------ the browser


class Page:
    """One Chromium tab driven through the DevTools protocol."""

    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0
        self.exceptions = []
        self.events = []  # the names of the events received

    def _event(self, msg):
        self.events.append(msg["method"])
        if msg["method"] == "Runtime.exceptionThrown":
            details = msg["params"]["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            self.exceptions.append(text)

    def call(self, method, params=None, timeout=10.0):
        self.next_id += 1
        my_id = self.next_id
        self.ws.send(json.dumps({"id": my_id, "method": method, "params": params or {}}))
        until = deadline(timeout)
        while True:
            msg = json.loads(self.ws.recv(until))
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise Failure(f"DevTools {method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self._event(msg)

    def navigate(self, url, timeout=15.0):
        """Opens `url` and returns once its load event fired."""
        del self.events[:]
        result = self.call("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise Failure(f"chromium could not open {url}: {result['errorText']}")
        until = deadline(timeout)
        while "Page.loadEventFired" not in self.events:
            msg = json.loads(self.ws.recv(until))
            if "method" in msg:
                self._event(msg)

    def js(self, expression, await_promise=False):
        """The value of a JavaScript expression in the page."""
        result = self.call("Runtime.evaluate", {
            "expression": expression, "returnByValue": True, "awaitPromise": await_promise})
        if "exceptionDetails" in result:
            d = result["exceptionDetails"]
            raise Failure(f"JavaScript failed: {d.get('exception', {}).get('description') or d.get('text')}"
                          f"\n  in: {expression}")
        return result.get("result", {}).get("value")

    def check_no_exceptions(self):
        if self.exceptions:
            raise Failure("the page threw: " + "; ".join(map(str, self.exceptions)))

    def wait(self, expression, what, timeout=10.0):
        """Polls until `expression` is truthy (and no request is in flight)."""
        until = deadline(timeout)
        while True:
            self.check_no_exceptions()
            if self.js(f"document.body.dataset.busy === '0' && !!({expression})"):
                return
            if time.monotonic() > until:
                raise Failure(f"timed out waiting for {what}; the page shows:\n{self.visible_text()}")
            time.sleep(0.05)

    def visible_text(self):
        try:
            return (self.js("document.querySelector('main').innerText") or "")[:3000]
        except Failure as e:
            return f"(could not read the page: {e})"

    def click(self, selector):
        """A real mouse click (pressed + released) at the element's centre,
        after checking that the element is visible, enabled and on top."""
        sel = json.dumps(selector)
        box = self.js(f"""(() => {{
            const e = document.querySelector({sel});
            if (!e) return {{error: 'no element'}};
            e.scrollIntoView({{block: 'center', inline: 'center'}});
            const r = e.getBoundingClientRect();
            if (r.width === 0 || r.height === 0) return {{error: 'not visible'}};
            if (e.disabled) return {{error: 'disabled'}};
            const x = r.left + r.width / 2, y = r.top + r.height / 2;
            const top = document.elementFromPoint(x, y);
            if (!top || !(top === e || e.contains(top))) return {{error: 'covered by ' + (top ? top.outerHTML.slice(0, 80) : 'nothing')}};
            return {{x, y}};
        }})()""")
        if "error" in box:
            raise Failure(f"cannot click {selector}: {box['error']}; the page shows:\n{self.visible_text()}")
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            params = {"type": kind, "x": box["x"], "y": box["y"]}
            if kind != "mouseMoved":
                params.update(button="left", clickCount=1)
            self.call("Input.dispatchMouseEvent", params)

    def type_text(self, selector, text):
        """Clicks the field, selects what it holds and types `text` over it."""
        self.click(selector)
        self.js(f"document.querySelector({json.dumps(selector)}).select()")
        self.call("Input.insertText", {"text": text})

    def set_value(self, selector, value):
        """Sets a <select> / <input> as the user would pick it: value, then change."""
        ok = self.js(f"""(() => {{
            const e = document.querySelector({json.dumps(selector)});
            if (!e) return 'no element';
            if (e.tagName === 'SELECT' && ![...e.options].some(o => o.value === {json.dumps(value)}))
              return 'no option ' + {json.dumps(value)} + ' among ' + [...e.options].map(o => o.value).join(',');
            e.focus();
            e.value = {json.dumps(value)};
            e.dispatchEvent(new Event('input', {{bubbles: true}}));
            e.dispatchEvent(new Event('change', {{bubbles: true}}));
            return 'ok';
        }})()""")
        if ok != "ok":
            raise Failure(f"cannot set {selector} to {value!r}: {ok}")

    def text(self, selector):
        return self.js(f"(document.querySelector({json.dumps(selector)}) || {{}}).textContent")


class Chromium:
    def __init__(self, binary):
        self.profile = tempfile.mkdtemp(prefix="convstore-ui-chromium-")
        self.log = open(os.path.join(self.profile, "chromium.log"), "w+b")
        self.proc = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
             f"--user-data-dir={self.profile}", "--no-first-run", "--no-default-browser-check",
             "--disable-extensions", "--disable-background-networking", "--disable-sync",
             "--disable-dev-shm-usage", "--disable-component-update", "--mute-audio",
             "--window-size=1280,1000", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log, start_new_session=True)
        self.ws = None

    def connect(self):
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        until = deadline(20.0)
        while not (os.path.exists(port_file) and open(port_file).read().strip()):
            if self.proc.poll() is not None:
                raise Failure(f"chromium exited with status {self.proc.returncode}:\n{self.output()}")
            if time.monotonic() > until:
                raise Failure(f"chromium did not open its DevTools port:\n{self.output()}")
            time.sleep(0.05)
        port = int(open(port_file).read().split()[0])
        targets = []
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                targets = [t for t in json.load(r) if t.get("type") == "page"]
            if targets or time.monotonic() > until:
                break
            time.sleep(0.05)
        if not targets:
            raise Failure("chromium has no page to drive")
        self.ws = WebSocket(targets[0]["webSocketDebuggerUrl"], timeout=10)
        return Page(self.ws)

    def output(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-3000:]

    def stop(self):
        if self.ws:
            self.ws.close()
        kill_group(self.proc)
        self.log.close()
        shutil.rmtree(self.profile, ignore_errors=True)


def kill_group(proc):
    """Ends a child started in its own session, and whatever it started."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # helpers left behind in the group
    except ProcessLookupError:
        pass
    proc.wait()


# ------------------------------------------------------------- the server


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """The built assistant_server on a free port, on a fresh database.

    `args` may hold {db} (the database URL) and {port} (a free port picked
    here); without {port} the server is expected to pick one (--listen
    127.0.0.1:0) and print "listening on http://HOST:PORT" on stdout."""

    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="convstore-ui-server-")
        self.pg_admin = None
        self.schema = None
        self.proc = None
        self.url = None
        self.stdout = []
        self.listen_url = None
        self.listening = threading.Event()
        self.log = open(os.path.join(self.tmp, "server.log"), "w+b")

    def start(self, binary, backend, args):
        if backend == "sqlite":
            db = f"sqlite:{os.path.join(self.tmp, 'ui.db')}"
        else:
            base = os.environ.get("CONVSTORE_TEST_PG_URL")
            if not base:
                skip_or_fail("CONVSTORE_TEST_PG_URL is not set: the PostgreSQL UI test cannot run")
            self.pg_admin = base
            self.schema = "t_ui_" + uuid.uuid4().hex[:12]
            self.psql(f"CREATE SCHEMA {self.schema}")
            db = base + ("&" if "?" in base else "?") + "options=-csearch_path%3D" + self.schema
        port = free_port() if any("{port}" in a for a in args) else None
        args = [a.replace("{port}", str(port)).replace("{db}", db) for a in args]
        log(f"starting {os.path.basename(binary)} ({backend})")
        self.proc = subprocess.Popen([binary] + args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self.log, start_new_session=True)
        # stdout is read to the end by a thread, so the server never blocks on it.
        threading.Thread(target=self._read_stdout, daemon=True).start()
        until = deadline(15.0)
        self.url = f"http://127.0.0.1:{port}" if port else None
        while True:
            if self.proc.poll() is not None:
                raise Failure(f"the server exited with status {self.proc.returncode}:\n{self.output()}")
            if self.url is None and self.listening.is_set():
                self.url = self.listen_url
            if self.url:
                try:
                    with urllib.request.urlopen(self.url + "/health", timeout=1) as r:
                        if r.status == 200:
                            log(f"server ready at {self.url}")
                            return
                except (urllib.error.URLError, OSError):
                    pass
            if time.monotonic() > until:
                raise Failure(f"the server did not answer /health:\n{self.output()}")
            time.sleep(0.05)

    def _read_stdout(self):
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self.stdout.append(line)
            if not self.listening.is_set() and line.startswith("listening on http://"):
                self.listen_url = line[len("listening on "):].strip()
                self.listening.set()

    def psql(self, sql):
        psql = shutil.which("psql")
        if not psql:
            raise Failure("psql (Debian package postgresql-client) is needed to create a schema")
        r = subprocess.run([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.pg_admin, "-c", sql],
                           capture_output=True, text=True, timeout=20)
        if r.returncode != 0:
            raise Failure(f"psql on {mask_url(self.pg_admin)} failed: {r.stderr.strip()}")

    def output(self):
        self.log.flush()
        self.log.seek(0)
        err = self.log.read().decode(errors="replace")[-3000:]
        return "stdout:\n" + "\n".join(self.stdout[-20:]) + "\nstderr:\n" + err

    def stop(self):
        if self.proc:
            kill_group(self.proc)
            self.proc.stdout.close()
        self.log.close()
        if self.schema:
            try:
                self.psql(f"DROP SCHEMA {self.schema} CASCADE")
            except Failure as e:
                log(f"warning: {e}")
        shutil.rmtree(self.tmp, ignore_errors=True)


# --------------------------------------------------------------- the test


def expect(cond, what):
    if not cond:
        raise Failure(what)


def last_message(api, conversation_id):
    messages = api.get(f"/api/v1/conversations/{conversation_id}?messages=10")["messages"]
    expect(messages, f"conversation {conversation_id} has no messages")
    return messages[-1], messages


def seed(api, tag):
    """A user with four review-mode conversations, each with a pending reply."""
    user = {"channel": "web", "external_id": f"ui-{tag}", "display_name": f"UI tester {tag}"}
    texts = [
        # Markup in user data must show as text, never run.
        f'Hello <b>bold</b> <img src=x onerror="window.__xss=1"> & "quotes" {tag}',
        f"Please draft a reply I can edit {tag}",
        f"A reply I will reject {tag}",
        f"A reply someone else rejects first {tag}",
    ]
    seeded = []
    for i, text in enumerate(texts):
        conv = api.post("/api/v1/conversations", {"user": user, "title": f"UI test {i + 1} {tag}",
                                                  "review": True})
        expect(conv.get("user_id"), f"the conversation has no user_id: {conv}")
        sent = api.post(f"/api/v1/conversations/{conv['id']}/messages", {"content": text})
        s = sent.get("suggestion")
        expect(s and s.get("status") == "pending_approval",
               f"a message in a review-mode conversation left no pending suggestion: {sent}")
        expect(not sent.get("reply"), f"a review-mode conversation replied directly: {sent}")
        seeded.append({"conversation": conv["id"], "user": conv["user_id"], "text": text, "suggestion": s})
    users = {c["user"] for c in seeded}
    expect(len(users) == 1, f"the same user got several ids: {users}")
    pending = api.get(f"/api/v1/reviews/pending?user_id={seeded[0]['user']}&limit=50")["items"]
    expect({p["id"] for p in pending} == {c["suggestion"]["id"] for c in seeded},
           f"the API's pending list is not the 4 seeded suggestions: {pending}")
    return seeded


def card(sid):
    return f'[data-testid=suggestion][data-suggestion-id="{sid}"]'


def run(api, page):
    tag = uuid.uuid4().hex[:8]
    seeded = seed(api, tag)
    user = str(seeded[0]["user"])
    sids = [str(c["suggestion"]["id"]) for c in seeded]
    log(f"seeded user {user}, suggestions {', '.join(sids)}")

    version = page.call("Browser.getVersion")
    log(f"{version.get('product')} driven through the DevTools protocol")
    page.call("Runtime.enable")
    page.call("Page.enable")
    page.navigate(api.base + "/")
    page.wait(f"document.readyState === 'complete' && "
              f"[...document.querySelectorAll('#user-select option')].some(o => o.value === {json.dumps(user)})",
              f"user {user} in the user list")
    expect(page.js("document.querySelectorAll('img, script[src], link[rel=stylesheet]').length") == 0,
           "the page loads external resources")

    # ---- the review queue
    page.set_value("#user-select", user)
    wanted = json.dumps(sorted(sids), separators=(",", ":"))
    page.wait(f"JSON.stringify([...document.querySelectorAll('[data-testid=suggestion]')]"
              f".map(e => e.dataset.suggestionId).sort()) === {json.dumps(wanted)}",
              "the 4 pending replies")
    first = seeded[0]
    shown_context = page.text(card(sids[0]) + " [data-testid=context]")
    expect(first["text"] in (shown_context or ""),
           f"the reply's context does not show the user's message as text: {shown_context!r}")
    shown = page.text(card(sids[0]) + " [data-testid=suggestion-text]")
    expect(shown == first["suggestion"]["suggested_text"],
           f"the suggested text shown is {shown!r}, not {first['suggestion']['suggested_text']!r}")
    expect(page.js("document.querySelectorAll('img, b').length === 0 && window.__xss === undefined"),
           "user data was rendered as HTML")

    problems = page.js("""(() => {
        const out = [], ids = new Set();
        for (const e of document.querySelectorAll('[id]')) {
          if (ids.has(e.id)) out.push('duplicate id ' + e.id);
          ids.add(e.id);
        }
        for (const e of document.querySelectorAll('input, select, textarea'))
          if (!(e.labels && e.labels.length) && !e.getAttribute('aria-label')) out.push('no label for ' + (e.id || e.outerHTML));
        for (const b of document.querySelectorAll('button'))
          if (!b.textContent.trim() && !b.getAttribute('aria-label')) out.push('a button without a name');
        return out;
    })()""")
    expect(not problems, f"accessibility: {problems}")

    # ---- a reply's whole conversation opens in the browser, and back
    page.click(card(sids[0]) + " [data-testid=show-conversation]")
    page.wait(f"!document.getElementById('transcript').hidden && "
              f"document.getElementById('transcript').dataset.conversationId === '{first['conversation']}'",
              "the reply's conversation in the browser")
    expect(first["text"] in page.text("#transcript-messages"), "the transcript lacks the user's message")
    # The conversation's open reply, when the server reports one, is shown
    # with a way back to the review queue.
    reported = api.get(f"/api/v1/conversations/{first['conversation']}?messages=1").get("suggestion")
    if reported:
        expect(reported["id"] == first["suggestion"]["id"], f"the API reports another open reply: {reported}")
        expect(page.js("!document.getElementById('transcript-suggestion').hidden") and
               page.text("[data-testid=transcript-suggestion-status]") == "pending approval",
               f"the transcript does not show the pending reply: {page.text('#transcript-suggestion')!r}")
        page.click("[data-testid=review-suggestion]")
    else:
        expect(page.js("document.getElementById('transcript-suggestion').hidden"),
               "the transcript shows an open reply the API does not report")
        page.click("#tab-review")
    page.wait(f"!document.getElementById('review-view').hidden && !!document.querySelector({json.dumps(card(sids[0]))})",
              "the review queue again")

    # ---- approve as is
    page.click(f"#approve-{sids[0]}")
    page.wait(f"!document.querySelector({json.dumps(card(sids[0]))}) && "
              f"!document.getElementById('status').hidden", "the approved reply to leave the queue")
    expect(f"#{sids[0]}" in page.text("#status"), f"no confirmation: {page.text('#status')!r}")
    focused = page.js("document.activeElement && document.activeElement.id")
    expect(focused == f"approve-{sids[1]}",
           f"after the action the focus is on {focused!r}, not on the next reply's Approve button")
    s = api.get(f"/api/v1/reviews/{sids[0]}")
    expect(s["status"] == "sent", f"approved suggestion {sids[0]} is {s['status']}, not sent")
    expect(s.get("edited_text") is None, f"an approval without edit stored an edit: {s}")
    m, _ = last_message(api, first["conversation"])
    expect(m["role"] == "assistant" and m["content"] == first["suggestion"]["suggested_text"],
           f"the approved reply is not the conversation's last assistant message: {m}")
    log("approve: sent, stored as the assistant's message")

    # ---- edit, then approve
    second = seeded[1]
    edited = f"Edited by the reviewer: é ✓ <i>not markup</i>\nsecond line {tag}"
    page.click(f"#edit-{sids[1]}")
    page.wait(f"!document.getElementById('edit-panel-{sids[1]}').hidden", "the edit box")
    expect(page.js(f"document.activeElement && document.activeElement.id === 'edit-text-{sids[1]}'"),
           "the edit box does not have the focus")
    page.type_text(f"#edit-text-{sids[1]}", edited)
    expect(page.js(f"document.getElementById('edit-text-{sids[1]}').value") == edited,
           "the typed text is not in the edit box")
    page.click(f"#approve-edited-{sids[1]}")
    page.wait(f"!document.querySelector({json.dumps(card(sids[1]))})", "the edited reply to leave the queue")
    s = api.get(f"/api/v1/reviews/{sids[1]}")
    expect(s["status"] == "sent", f"edited suggestion {sids[1]} is {s['status']}, not sent")
    expect(s.get("edited_text") == edited and s.get("text") == edited,
           f"the suggestion does not hold the edit: {s}")
    m, _ = last_message(api, second["conversation"])
    expect(m["role"] == "assistant" and m["content"] == edited,
           f"the stored assistant message is not the edited text: {m}")
    log("edit + approve: the edited text was sent and stored")

    # ---- reject with a reason
    third = seeded[2]
    reason = f"Too vague {tag}"
    page.click(f"#reject-{sids[2]}")
    page.wait(f"!document.getElementById('reject-panel-{sids[2]}').hidden", "the reason field")
    page.type_text(f"#reject-reason-{sids[2]}", reason)
    page.click(f"#confirm-reject-{sids[2]}")
    page.wait(f"!document.querySelector({json.dumps(card(sids[2]))})", "the rejected reply to leave the queue")
    s = api.get(f"/api/v1/reviews/{sids[2]}")
    expect(s["status"] == "rejected" and s.get("reason") == reason,
           f"suggestion {sids[2]} is not rejected with the reason: {s}")
    m, _ = last_message(api, third["conversation"])
    expect(m["role"] == "user", f"a rejected reply was stored as a message: {m}")
    log("reject: rejected with the reason, nothing stored")

    # ---- an action the server refuses: the error JSON is shown
    status, _ = api.call("POST", f"/api/v1/reviews/{sids[3]}/reject", {"reason": "behind the page's back"})
    page.click(f"#approve-{sids[3]}")
    page.wait("!document.getElementById('error').hidden", "the error message")
    error = page.text("#error-text")
    status, body = api.call("POST", f"/api/v1/reviews/{sids[3]}/approve", {}, expect=None)
    expect(status >= 400 and isinstance(body, dict) and "error" in body,
           f"approving a rejected reply did not fail with an error JSON: {status} {body}")
    category = body["error"]["category"]
    expect(category in error and str(status) in error and f"#{sids[3]}" in error,
           f"the page's error {error!r} does not show category {category!r} and HTTP {status}")
    s = api.get(f"/api/v1/reviews/{sids[3]}")
    expect(s["status"] == "rejected", f"the refused approval changed the suggestion: {s}")
    page.wait(f"!document.querySelector({json.dumps(card(sids[3]))}) && "
              "!document.getElementById('no-suggestions').hidden", "the emptied queue")
    log(f"refused approval: the page shows {error!r}")

    # ---- the conversation browser
    page.click("#tab-conversations")
    page.wait("!document.getElementById('conversations-view').hidden", "the conversations view")
    page.set_value("#page-size", "3")
    page.set_value("#conv-user-filter", user)
    page.wait("document.querySelectorAll('[data-testid=conversation-row]').length === 3 && "
              "!document.getElementById('conv-next').disabled", "the first page of 3")
    seen = []
    for _ in range(5):  # pages of 3; the last may come back empty
        seen += page.js("[...document.querySelectorAll('[data-testid=conversation-row]')]"
                        ".map(r => r.dataset.conversationId)")
        if page.js("document.getElementById('conv-next').disabled"):
            break
        page_no = page.text("#conv-page")
        page.click("#conv-next")
        page.wait(f"document.getElementById('conv-page').textContent !== {json.dumps(page_no)}", "the next page")
    wanted = sorted(str(c["conversation"]) for c in seeded)
    expect(sorted(seen) == wanted, f"paging listed {seen}, not the user's conversations {wanted}")

    page.set_value("#status-filter", "completed")
    page.wait("document.querySelectorAll('[data-testid=conversation-row]').length === 0 && "
              "!document.getElementById('no-conversations').hidden", "no completed conversation")
    page.set_value("#status-filter", "active")
    page.set_value("#page-size", "20")
    page.wait("document.querySelectorAll('[data-testid=conversation-row]').length === 4",
              "the user's 4 active conversations")

    page.click(f"#open-conversation-{second['conversation']}")
    page.wait(f"!document.getElementById('transcript').hidden && "
              f"document.getElementById('transcript').dataset.conversationId === '{second['conversation']}'",
              "the transcript")
    roles = page.js("[...document.querySelectorAll('#transcript-messages [data-testid=message]')]"
                    ".map(m => m.dataset.role)")
    contents = page.js("[...document.querySelectorAll('#transcript-messages [data-testid=message-content]')]"
                       ".map(m => m.textContent)")
    expect(roles == ["user", "assistant"] and contents == [second["text"], edited],
           f"the transcript shows {list(zip(roles or [], contents or []))}")
    log("browser: user and status filters, paging, transcript")
    page.check_no_exceptions()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="a running server")
    target.add_argument("--server-bin", help="the assistant_server binary to start")
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--server-args", default="--listen 127.0.0.1:0 --db {db}",
                        help="the server's arguments: {db} is replaced by the database URL, "
                             "{port} (if present) by a free port")
    parser.add_argument("--chromium", default=os.environ.get("CONVSTORE_CHROMIUM", "chromium"))
    args = parser.parse_args()

    # Killed (ctest's timeout, Ctrl+C): still stop chromium and the server.
    def interrupted(signum, _frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)

    chromium_bin = shutil.which(args.chromium)
    if not chromium_bin:
        skip_or_fail(f"{args.chromium} is not installed (Debian package chromium)")

    server = browser = None
    try:
        if args.server_bin:
            server = Server()
            server.start(args.server_bin, args.backend, args.server_args.split())
            base = server.url
        else:
            base = args.url
        browser = Chromium(chromium_bin)
        page = browser.connect()
        run(Api(base), page)
    except Exception as e:  # noqa: BLE001 -- reported, then everything is cleaned up
        if isinstance(e, Failure):
            print(f"ui_test: FAILED: {e}", file=sys.stderr)
        else:
            traceback.print_exc()
            print("ui_test: FAILED (an unexpected error, above)", file=sys.stderr)
        if server and server.proc:
            print(f"--- server output ---\n{server.output()}", file=sys.stderr)
        return 1
    finally:
        if browser:
            browser.stop()
        if server:
            server.stop()
    log("passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
