#!/usr/bin/env python3
"""Drives varied traffic at a gateway for infra/render/run.sh (standard library only).

    traffic.py GATEWAY_URL ADMIN_KEY ALICE_KEY BOB_KEY ERIN_KEY [--seconds 150]

Over the run, at rates that swell and ebb: chat answers (gpt-4o-mini, whose
top-priority channel `flaky` fails most attempts, so retries and failovers to
`primary`), streams (gpt-4o, llama-3-70b on the slow channel), Anthropic
`/v1/messages`, `/v1/completions` and `/v1/embeddings`, bursts at the
rate-limited model, an unknown model, a model whose only channel is dead, and a
user with a small balance who crosses the alert thresholds and runs out. Every
25 s it switches `flaky` and `dead` back on through the admin API, so the
gateway auto-disables them again. Prints a count of answers by status.
"""
import argparse
import collections
import json
import math
import random
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

p = argparse.ArgumentParser()
p.add_argument("url")
p.add_argument("admin")
p.add_argument("alice")
p.add_argument("bob")
p.add_argument("erin")
p.add_argument("--seconds", type=float, default=150)
A = p.parse_args()

COUNTS = collections.Counter()
LOCK = threading.Lock()
STOP = time.monotonic() + A.seconds
T0 = time.monotonic()
POOL = ThreadPoolExecutor(max_workers=48)
LOREM = ("please summarise the quarterly report on gateway traffic spend and latency for the operations "
         "team with a short list of the channels that failed and why ").split()


def call(method, path, key, body=None, stream=False):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(A.url + path, data=data, method=method)
    req.add_header("authorization", f"Bearer {key}")
    if data is not None:
        req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            if stream:
                for _ in resp:  # read the SSE lines as they come
                    pass
            else:
                resp.read()
            status = resp.status
    except urllib.error.HTTPError as e:
        e.read()
        status = e.code
    except OSError:
        status = "error"
    with LOCK:
        COUNTS[(path, status)] += 1
    return status


def chat(model, n_words=6, stream=False, max_tokens=32):
    msg = " ".join(random.choice(LOREM) for _ in range(n_words))
    body = {"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": msg}]}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def wave(period, lo, hi, phase=0.0):
    """A rate between lo and hi that swells and ebbs with `period` seconds."""
    t = time.monotonic() - T0
    return lo + (hi - lo) * (0.5 + 0.5 * math.sin(2 * math.pi * t / period + phase))


def loop(rate, fire):
    """Calls `fire` about `rate()` times a second (Poisson arrivals) until the end."""
    while time.monotonic() < STOP:
        time.sleep(random.expovariate(max(rate(), 0.01)))
        if time.monotonic() < STOP:
            POOL.submit(fire)


def alice():
    r = random.random()
    if r < 0.70:
        call("POST", "/v1/chat/completions", A.alice, chat("gpt-4o-mini"))
    elif r < 0.85:
        call("POST", "/v1/chat/completions", A.alice, chat("gpt-4o-mini", stream=True), stream=True)
    elif r < 0.93:
        call("POST", "/v1/messages", A.alice, {
            "model": "gpt-4o-mini", "max_tokens": 32,
            "messages": [{"role": "user", "content": "hello from an anthropic client"}]})
    elif r < 0.97:
        call("POST", "/v1/embeddings", A.alice, {"model": "text-embedding-3-small", "input": ["a", "b c"]})
    else:
        call("POST", "/v1/completions", A.alice, {"model": "gpt-4o-mini", "prompt": "say hi", "max_tokens": 8})


def bob():
    if random.random() < 0.6:
        call("POST", "/v1/chat/completions", A.bob, chat("gpt-4o", 20, stream=True, max_tokens=64), stream=True)
    else:
        call("POST", "/v1/chat/completions", A.bob, chat("llama-3-70b", 12, stream=random.random() < 0.5),
             stream=True)


def erin():
    call("POST", "/v1/chat/completions", A.erin, chat("gpt-4o", 100, max_tokens=8))


def limited_burst():
    while time.monotonic() < STOP:
        time.sleep(random.uniform(12, 20))
        if time.monotonic() >= STOP:
            break
        for _ in range(random.randint(6, 14)):
            POOL.submit(call, "POST", "/v1/chat/completions", A.alice, chat("m-limited"))


def oddballs():
    while time.monotonic() < STOP:
        time.sleep(random.uniform(1.5, 4))
        if time.monotonic() >= STOP:
            break
        if random.random() < 0.5:
            POOL.submit(call, "POST", "/v1/chat/completions", A.alice, chat("gpt-5-ultra"))  # not served: 4xx
        else:
            POOL.submit(call, "POST", "/v1/chat/completions", A.alice, chat("m-down"))  # its only channel fails


def reenable():
    """Switches the failing channels back on now and then (an operator retrying)."""
    status, ids = None, {}
    while time.monotonic() < STOP:
        time.sleep(25)
        if time.monotonic() >= STOP:
            break
        try:
            req = urllib.request.Request(A.url + "/api/admin/channels?per_page=100")
            req.add_header("authorization", f"Bearer {A.admin}")
            with urllib.request.urlopen(req, timeout=10) as resp:
                ids = {c["name"]: c["id"] for c in json.load(resp)["data"]}
            for name in ("flaky", "dead"):
                body = json.dumps({"status": "enabled"}).encode()
                req = urllib.request.Request(f"{A.url}/api/admin/channels/{ids[name]}", data=body, method="PATCH")
                req.add_header("authorization", f"Bearer {A.admin}")
                req.add_header("content-type", "application/json")
                with urllib.request.urlopen(req, timeout=10) as resp:
                    status = resp.status
            with LOCK:
                COUNTS[("re-enabled flaky+dead", status)] += 1
        except (OSError, KeyError, ValueError) as e:
            with LOCK:
                COUNTS[("re-enable failed", str(e)[:60])] += 1


threads = [
    threading.Thread(target=loop, args=(lambda: wave(60, 1.5, 6.0), alice)),
    threading.Thread(target=loop, args=(lambda: wave(45, 0.3, 1.6, 1.5), bob)),
    threading.Thread(target=loop, args=(lambda: 0.7, erin)),
    threading.Thread(target=limited_burst),
    threading.Thread(target=oddballs),
    threading.Thread(target=reenable),
]
for t in threads:
    t.daemon = True
    t.start()
for t in threads:
    t.join(timeout=max(0.0, STOP - time.monotonic()) + 30)
POOL.shutdown(wait=True)
for (path, status), n in sorted(COUNTS.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1]))):
    print(f"{n:6d}  {status}  {path}")
