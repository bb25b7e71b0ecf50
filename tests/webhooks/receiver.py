"""A webhook receiver that verifies every delivery with the `standardwebhooks`
package (an implementation keygate did not write).

Usage: receiver.py SECRET_FILE OUT_FILE
Prints the port it listens on (127.0.0.1), then for every delivery appends one
JSON line to OUT_FILE: {"id", "type", "verified", "error"}. Answers 204 when the
signature verifies, 400 otherwise. The secret is read from SECRET_FILE on every
request (the test writes it once the endpoint exists).
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook

SECRET_FILE, OUT_FILE = sys.argv[1], sys.argv[2]


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {k.lower(): v for k, v in self.headers.items()}
        record = {"id": headers.get("webhook-id"), "type": None, "verified": False, "error": None}
        try:
            with open(SECRET_FILE, encoding="utf-8") as f:
                secret = f.read().strip()
            payload = Webhook(secret).verify(body, headers)
            record["type"] = payload.get("type")
            record["verified"] = True
            status = 204
        except Exception as e:  # noqa: BLE001 - any failure is reported to the test
            record["error"] = repr(e)
            status = 400
        with open(OUT_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
