#!/usr/bin/env python3
"""A real webhook receiver for evproc's tests and benchmark (Python 3 standard library).

Listens on 127.0.0.1 (a free port, or --port), writes the port to --port-file once
listening, and appends one JSON line per request to --log: the Standard Webhooks headers,
whether the signature verified with --secret, the evproc headers, the answer it gave and
the body's events. What it answers is set at run time by POST /control with a JSON
object (the rest of the object is kept):
  {"mode": "ok"}                      200 (default)
  {"mode": "429", "retry_after": 2}   429 with Retry-After (omitted when null)
  {"mode": "503", "retry_after": 1}   503 likewise
  {"mode": "500"}                     500
  {"mode": "slow", "seconds": 5}      sleeps, then 200 (beyond the sink's timeout)
  {"mode": "drop"}                    closes the connection without an answer
  {"mode": "410"}                     410 Gone
  {"refuse_keys": ["k1"]}             400 for a request holding an event of these keys
                                      (any mode answering 200 otherwise)
GET /stats answers {"requests": n}. SIGTERM stops it at once; its pid is written to
--port-file + ".pid".
"""
import argparse
import base64
import hashlib
import hmac
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

state = {"mode": "ok", "refuse_keys": []}
lock = threading.Lock()
log_lock = threading.Lock()
requests_seen = 0


def signing_key(secret):
    if secret is None:
        return None
    if secret.startswith("whsec_"):
        return base64.b64decode(secret[len("whsec_"):])
    return secret.encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "evproc-test-receiver"

    def log_message(self, *args):  # quiet
        pass

    def answer(self, status, body=b"", headers=None):
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/stats":
            with lock:
                body = json.dumps({"requests": requests_seen}).encode()
            self.answer(200, body, {"Content-Type": "application/json"})
        else:
            self.answer(404)

    def do_POST(self):
        global requests_seen
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        if self.path == "/control":
            with lock:
                state.update(json.loads(body))
            self.answer(200, b"{}")
            return
        with lock:
            requests_seen += 1
            mode = dict(state)
        wid = self.headers.get("webhook-id")
        ts = self.headers.get("webhook-timestamp")
        sig = self.headers.get("webhook-signature")
        valid = None
        if self.server.key is not None:
            expected = base64.b64encode(
                hmac.new(self.server.key, f"{wid}.{ts}.".encode() + body, hashlib.sha256).digest()
            ).decode()
            valid = sig is not None and any(
                part.startswith("v1,") and hmac.compare_digest(part[3:], expected)
                for part in sig.split(" ")
            )
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        events = parsed if isinstance(parsed, list) else [parsed]
        keys = [e.get("key") for e in events if isinstance(e, dict)]
        m = mode.get("mode", "ok")
        status = 200
        extra = {}
        if m == "drop":
            status = 0
        elif m == "slow":
            time.sleep(float(mode.get("seconds", 5)))
        elif m in ("429", "503"):
            status = int(m)
            if mode.get("retry_after") is not None:
                extra["Retry-After"] = str(mode["retry_after"])
        elif m in ("500", "410"):
            status = int(m)
        if status == 200 and any(k in mode.get("refuse_keys", []) for k in keys):
            status = 400
        record = {
            "at": time.time(),
            "webhook_id": wid,
            "timestamp": ts,
            "signature_valid": valid,
            "status": status,
            "topic": self.headers.get("evproc-topic"),
            "event_id": self.headers.get("evproc-event-id"),
            "key": self.headers.get("evproc-key"),
            "attempt": self.headers.get("evproc-attempt"),
            "user_header": self.headers.get("X-Test"),
            "events": events,
        }
        with log_lock:
            with open(self.server.log, "a") as f:
                f.write(json.dumps(record) + "\n")
        if status == 0:
            self.close_connection = True
            try:
                self.connection.shutdown(2)
            except OSError:
                pass
            return
        if status == 400:
            self.answer(400, b'{"error": "refused by the test receiver"}',
                        {"Content-Type": "application/json", "X-Reason": "refused-key"})
        else:
            self.answer(status, b"ok", extra)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--secret")
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.log = args.log
    server.key = signing_key(args.secret)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    with open(args.port_file + ".pid", "w") as f:
        f.write(str(os.getpid()))
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(server.server_address[1]))
    os.rename(tmp, args.port_file)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
