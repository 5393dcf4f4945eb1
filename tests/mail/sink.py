"""The mail sink for tests: a real SMTP server (aiosmtpd) and a Resend-shaped
HTTP mail API on 127.0.0.1, keeping every message they receive for the tests
to read back over HTTP.

SMTP (SMTP_PORT): no TLS; AUTH PLAIN/LOGIN offered over plain text (a test
sink only) and optional: a client that authenticates must use the user and
password below, one that does not is accepted too.

HTTP (HTTP_PORT):
  GET    /messages?to=ADDR   JSON list of messages to ADDR (all without `to`), oldest first:
                             {"via": "smtp"|"api", "from", "to": [..], "subject", "text",
                              "content_type", "auth_user"}
  DELETE /messages?to=ADDR   forgets the messages to ADDR (all without `to`): {"deleted": n}
  POST   /emails             Resend's send API: {"from", "to": ADDR|[..], "subject", "text"} with
                             `Authorization: Bearer API_KEY`; 200 {"id"}, 401 without a key,
                             403 for a wrong one (its message quotes the key it got, so a client
                             can be tested for keeping keys out of its errors), 422 for a bad body.

Usage: sink.py SMTP_PORT HTTP_PORT [--user U] [--password P] [--api-key K]
"""

import argparse
import email
import email.policy
import json
import threading
import uuid
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

parser = argparse.ArgumentParser()
parser.add_argument("smtp_port", type=int)
parser.add_argument("http_port", type=int)
parser.add_argument("--user", default="oblivious")
parser.add_argument("--password", default="p@ss w0rd")
parser.add_argument("--api-key", default="oblivious-test-mail-key")
args = parser.parse_args()
# aiosmtpd itself still sets the deprecated Session.login_data on every AUTH.
warnings.filterwarnings("ignore", message="Session.login_data")

messages = []
lock = threading.Lock()


def keep(message):
    with lock:
        messages.append(message)


def addressed_to(message, to):
    return to is None or to.lower() in (a.lower() for a in message["to"])


def lines(text):
    """Line ends as the sender wrote them (SMTP carries CRLF)."""
    return text.replace("\r\n", "\n")


class Sink:
    async def handle_DATA(self, server, session, envelope):
        parsed = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        body = parsed.get_body(preferencelist=("plain",))
        auth = session.auth_data
        keep(
            {
                "via": "smtp",
                "from": str(parsed["from"] or ""),
                "envelope_from": envelope.mail_from,
                "to": list(envelope.rcpt_tos),
                "subject": str(parsed["subject"] or ""),
                "text": lines(body.get_content()) if body is not None else "",
                "content_type": parsed.get("content-type", ""),
                "auth_user": auth.login.decode() if isinstance(auth, LoginPassword) else None,
            }
        )
        return "250 OK: kept"


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == args.user.encode()
        and auth_data.password == args.password.encode()
    )
    return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


class Api(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *a):
        pass

    def answer(self, status, value):
        data = json.dumps(value, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def to(self):
        return parse_qs(urlparse(self.path).query).get("to", [None])[0]

    def do_GET(self):
        if urlparse(self.path).path != "/messages":
            return self.answer(404, {"message": "not found"})
        to = self.to()
        with lock:
            found = [m for m in messages if addressed_to(m, to)]
        self.answer(200, found)

    def do_DELETE(self):
        if urlparse(self.path).path != "/messages":
            return self.answer(404, {"message": "not found"})
        to = self.to()
        with lock:
            kept = [m for m in messages if not addressed_to(m, to)]
            deleted = len(messages) - len(kept)
            messages[:] = kept
        self.answer(200, {"deleted": deleted})

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        if urlparse(self.path).path != "/emails":
            return self.answer(404, {"message": "not found"})
        auth = self.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:]:
            return self.answer(
                401, {"statusCode": 401, "name": "missing_api_key", "message": "Missing API key in the authorization header"}
            )
        if auth[7:] != args.api_key:
            return self.answer(
                403, {"statusCode": 403, "name": "invalid_api_key", "message": f"API key is invalid: {auth[7:]}"}
            )
        try:
            sent = json.loads(body)
            to = sent["to"] if isinstance(sent["to"], list) else [sent["to"]]
            assert all(isinstance(v, str) and "@" in v for v in [sent["from"], *to]) and to
            assert isinstance(sent["subject"], str) and isinstance(sent.get("text", ""), str)
        except (ValueError, KeyError, TypeError, AssertionError):
            return self.answer(422, {"statusCode": 422, "name": "validation_error", "message": "from, to and subject are required"})
        keep(
            {
                "via": "api",
                "from": sent["from"],
                "envelope_from": sent["from"],
                "to": to,
                "subject": sent["subject"],
                "text": sent.get("text", ""),
                "content_type": self.headers.get("content-type", ""),
                "auth_user": None,
            }
        )
        self.answer(200, {"id": str(uuid.uuid4())})


smtp = Controller(
    Sink(),
    hostname="127.0.0.1",
    port=args.smtp_port,
    authenticator=authenticator,
    auth_require_tls=False,
    decode_data=False,
)
smtp.start()
print(f"SMTP on 127.0.0.1:{args.smtp_port}, HTTP on 127.0.0.1:{args.http_port}", flush=True)
try:
    ThreadingHTTPServer(("127.0.0.1", args.http_port), Api).serve_forever()
finally:
    smtp.stop()
