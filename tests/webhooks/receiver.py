"""A webhook receiver on loopback for the integration tests.

Every request is verified with the `standardwebhooks` library (PyPI), once per secret given
(`--secret`, repeatable, and the lines of `--secrets-file`, read at each request: during
a rotation both the old and the new secret must verify), and
once more with the body tampered (which must fail). One JSON line per request goes to stdout;
the first line is `{"port": N}`.

Behaviour: `--fail-first N` answers 500 to the first N requests, `--slow-first N` sleeps
`--slow-secs` before answering the first N (after the failures), `--redirect-to URL` answers
every request with a 302 to URL, `--status CODE` answers CODE instead of 204.
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
        if args.redirect_to:
            status = 302
        elif n <= args.fail_first:
            status = 500
        else:
            status = args.status
            slow = n <= args.fail_first + args.slow_first
        record["status"] = status
        record["slow"] = slow
        # Reported before a slow answer, so the lines come in the order requests arrived.
        with lock:
            print(json.dumps(record), flush=True)
        if slow:
            time.sleep(args.slow_secs)
        self.send_response(status)
        if args.redirect_to:
            self.send_header("location", args.redirect_to)
        self.send_header("content-length", "2")
        self.end_headers()
        try:
            self.wfile.write(b"ok")
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *a):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(json.dumps({"port": server.server_address[1]}), flush=True)
try:
    server.serve_forever()
except KeyboardInterrupt:
    pass
sys.exit(0)
