#!/usr/bin/env python3
"""A small OpenAI-compatible upstream for infra/render/run.sh, for the two
behaviours the repository's mock binary (tests/mock, `mock-upstream`) cannot be
told to have from outside: answering slowly and failing.

    mock.py PORT [--name N] [--delay LO-HI] [--fail-rate R] [--status S]
                 [--r429-rate R] [--stall-rate R] [--stall S]

POST /v1/chat/completions answers a `chat.completion` with usage, or an SSE
stream of `chat.completion.chunk`s (and a usage chunk when
`stream_options.include_usage` is set) ending in `data: [DONE]` when
`"stream": true`. A share of calls (`--fail-rate`) gets `--status` (500) with an
OpenAI error body, `--r429-rate` a 429, `--stall-rate` a pause of `--stall`
seconds before the answer head (an upstream timeout). POST /v1/completions
answers a `text_completion`; GET /v1/models lists one model. Listens on
127.0.0.1 only.
"""
import argparse
import json
import random
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WORDS = "the gateway relays every request to a channel and bills what it used".split()


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("port", type=int)
    p.add_argument("--name", default="pymock")
    p.add_argument("--delay", default="0-0", help="answer-head delay range, ms: LO-HI")
    p.add_argument("--chunk-ms", type=float, default=40, help="pause between stream chunks, ms")
    p.add_argument("--fail-rate", type=float, default=0.0)
    p.add_argument("--status", type=int, default=500)
    p.add_argument("--r429-rate", type=float, default=0.0)
    p.add_argument("--stall-rate", type=float, default=0.0)
    p.add_argument("--stall", type=float, default=3.0)
    return p.parse_args()


ARGS = parse_args()
LO, HI = (float(x) for x in ARGS.delay.split("-"))


def words(v):
    if isinstance(v, str):
        return len(v.split())
    if isinstance(v, list):
        return sum(words(x) for x in v)
    if isinstance(v, dict):
        return words(v.get("content", ""))
    return 0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *_):
        pass

    def send_json(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def error(self, status, message):
        kind = "server_error" if status >= 500 else "invalid_request_error"
        code = "rate_limit_exceeded" if status == 429 else None
        self.send_json(status, {"error": {"message": message, "type": kind, "param": None, "code": code}})

    def do_GET(self):
        if self.path.rstrip("/").endswith("/models"):
            self.send_json(200, {"object": "list", "data": [{"id": "mock", "object": "model", "owned_by": ARGS.name}]})
        else:
            self.error(404, "not found")

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return self.error(400, "mock: the body is not JSON")
        chat = self.path.endswith("/chat/completions")
        if not chat and not self.path.endswith("/completions"):
            return self.error(404, "mock: only /v1/chat/completions and /v1/completions")
        roll = random.random()
        if roll < ARGS.fail_rate:
            time.sleep(random.uniform(0.005, 0.03))
            return self.error(ARGS.status, f"{ARGS.name} failing on purpose")
        if roll < ARGS.fail_rate + ARGS.r429_rate:
            return self.error(429, f"{ARGS.name} is rate limiting")
        if roll < ARGS.fail_rate + ARGS.r429_rate + ARGS.stall_rate:
            time.sleep(ARGS.stall)
        time.sleep(random.uniform(LO, HI) / 1000)
        model = body.get("model", "unknown")
        prompt = 10 + words(body.get("messages", []))
        n = max(1, min(int(body.get("max_tokens") or 64), random.randint(8, 64)))
        pieces = [random.choice(WORDS) + " " for _ in range(n)]
        usage = {"prompt_tokens": prompt, "completion_tokens": n, "total_tokens": prompt + n}
        if not chat:
            prompt = 10 + words(body.get("prompt", ""))
            usage = {"prompt_tokens": prompt, "completion_tokens": n, "total_tokens": prompt + n}
            return self.send_json(200, {
                "id": "cmpl-py", "object": "text_completion", "created": int(time.time()), "model": model,
                "choices": [{"index": 0, "text": "".join(pieces), "logprobs": None, "finish_reason": "stop"}],
                "usage": usage})
        if body.get("stream") is True:
            return self.stream(model, pieces, usage, body.get("stream_options", {}).get("include_usage") is True)
        self.send_json(200, {
            "id": "chatcmpl-py", "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(pieces)},
                         "finish_reason": "stop"}],
            "usage": usage, "served_by": ARGS.name,
        })

    def stream(self, model, pieces, usage, include_usage):
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")
        self.end_headers()
        self.close_connection = True
        base = {"id": "chatcmpl-py", "object": "chat.completion.chunk", "created": int(time.time()), "model": model}

        def frame(obj):
            self.wfile.write(b"data: " + json.dumps(obj).encode() + b"\n\n")
            self.wfile.flush()

        try:
            frame({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
            for p in pieces:
                time.sleep(ARGS.chunk_ms / 1000)
                frame({**base, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]})
            frame({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
            if include_usage:
                frame({**base, "choices": [], "usage": usage})
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass


def main():
    server = ThreadingHTTPServer(("127.0.0.1", ARGS.port), Handler)
    server.daemon_threads = True
    print(f"{ARGS.name} mock upstream on http://127.0.0.1:{ARGS.port}/v1", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
