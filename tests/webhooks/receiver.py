"""A webhook receiver on loopback for the integration tests.

Every request is verified with the `standardwebhooks` library (PyPI), once per secret given
(`--secret`, repeatable, and the lines of `--secrets-file`, read at each request: during
a rotation both the old and the new secret must verify), and
once more with the body tampered (which must fail). One JSON line per request goes to stdout;
the first line is `{"port": N}`.

Behaviour: `--fail-first N` answers 500 to the first N requests, `--slow-first N` sleeps
`--slow-secs` before answering the first N (after the failures), `--redirect-to URL` answers
every request with a 302 to URL, `--status CODE` answers CODE instead of 204, `--body-hex HEX`
answers those bytes as the body (any bytes: NUL, invalid UTF-8). `--trickle-first N` answers
the first N requests (after the failures and the slow ones) 200 with a body announced at 1 MB
and sent a byte every 100 ms for `--trickle-secs`, or until the sender hangs up; a line
`{"trickle_done": n}` follows.
"""

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

parser = argparse.ArgumentParser()
parser.add_argument("--secret", action="append", default=[])
parser.add_argument("--secrets-file", default="")
parser.add_argument("--fail-first", type=int, default=0)
parser.add_argument("--slow-first", type=int, default=0)
parser.add_argument("--slow-secs", type=float, default=0.0)
parser.add_argument("--redirect-to", default="")
parser.add_argument("--status", type=int, default=204)
parser.add_argument("--body-hex", default="")
parser.add_argument("--trickle-first", type=int, default=0)
parser.add_argument("--trickle-secs", type=float, default=600.0)
args = parser.parse_args()

lock = threading.Lock()
count = 0


def verifies(secret, body, headers):
    try:
        Webhook(secret).verify(body, headers)
        return True
    except WebhookVerificationError:
        return False


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        global count
        with lock:
            count += 1
            n = count
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        headers = {k.lower(): v for k, v in self.headers.items()}
        secrets = list(args.secret)
        if args.secrets_file:
            try:
                with open(args.secrets_file) as f:
                    secrets += [line.strip() for line in f if line.strip()]
            except FileNotFoundError:
                pass
        record = {
            "n": n,
            "path": self.path,
            "id": headers.get("webhook-id", ""),
            "timestamp": headers.get("webhook-timestamp", ""),
            "signatures": len(headers.get("webhook-signature", "").split(" ")),
            "content_type": headers.get("content-type", ""),
            "verified": [verifies(s, body, headers) for s in secrets],
            "tampered_verifies": any(verifies(s, body + b" ", headers) for s in secrets),
            "body": json.loads(body) if body else None,
        }
        slow = False
        trickle = False
        if args.redirect_to:
            status = 302
        elif n <= args.fail_first:
            status = 500
        else:
            status = args.status
            slow = n <= args.fail_first + args.slow_first
            trickle = not slow and n <= args.fail_first + args.slow_first + args.trickle_first
            if trickle:
                status = 200
        record["status"] = status
        record["slow"] = slow
        # Reported before a slow answer, so the lines come in the order requests arrived.
        with lock:
            print(json.dumps(record), flush=True)
        if slow:
            time.sleep(args.slow_secs)
        if trickle:
            self.trickle(n)
            return
        answer = bytes.fromhex(args.body_hex) if args.body_hex else b"ok"
        self.send_response(status)
        if args.redirect_to:
            self.send_header("location", args.redirect_to)
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        try:
            self.wfile.write(answer)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def trickle(self, n):
        self.send_response(200)
        self.send_header("content-length", "1000000")
        self.end_headers()
        try:
            for _ in range(int(args.trickle_secs * 10)):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            pass
        with lock:
            print(json.dumps({"trickle_done": n}), flush=True)
        self.close_connection = True

    def log_message(self, *a):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(json.dumps({"port": server.server_address[1]}), flush=True)
try:
    server.serve_forever()
except KeyboardInterrupt:
    pass
sys.exit(0)
