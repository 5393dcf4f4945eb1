#!/usr/bin/env python3
"""Resident memory of a gateway binary through a burst of large bodies.

    cargo build --release -p oblivious -p oblivious-mock
    target/release/mock-upstream 9137 &
    python3 tests/bench/memory_burst.py target/release/oblivious 9137

Starts BINARY on a fresh data directory with one free channel on the mock
upstream at MOCK_PORT, then reports RSS before, around one 3.9 MB body of
100,000 messages, and at the peak of and 10 s after four concurrent 16.5 MB
bodies (9,000 messages of 1,800 characters). Standard library only.
"""
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request


def main(binary, mock_port):
    d = tempfile.mkdtemp()
    cfg = os.path.join(d, "oblivious.toml")
    with open(cfg, "w") as f:
        f.write(f'[prices."*"]\nfree = true\n\n[[channels]]\nname = "mock"\ntype = "openai"\n'
                f'base_url = "http://127.0.0.1:{mock_port}/v1"\nmodels = ["m-ok"]\n')
    args = [binary, "serve", "--listen", "127.0.0.1:0", "--config", cfg, "--data", os.path.join(d, "data")]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    url = key = None
    while url is None:
        line = p.stdout.readline()
        if "Admin API key" in line:
            key = line.split(":", 1)[1].split()[-1]
        if "listening on" in line:
            url = line.split("listening on ")[1].split()[0]

    def mib(field):
        with open(f"/proc/{p.pid}/status") as f:
            return next(int(l.split()[1]) / 1024 for l in f if l.startswith(field))

    def post(body):
        headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
        req = urllib.request.Request(url + "/v1/chat/completions", data=body, headers=headers)
        try:
            return urllib.request.urlopen(req, timeout=120).status
        except urllib.error.HTTPError as e:
            return e.code

    try:
        post(json.dumps({"model": "m-ok", "messages": [{"role": "user", "content": "hi"}]}).encode())
        before = mib("VmRSS:")
        many = json.dumps({"model": "m-ok", "messages": [{"role": "user", "content": f"m{i}"} for i in range(100_000)]})
        status_many = post(many.encode())
        time.sleep(1)
        peak_many, after_many = mib("VmHWM:"), mib("VmRSS:")
        big = json.dumps({"model": "m-ok", "max_tokens": 4, "messages": [{"role": "user", "content": "x" * 1800}] * 9000})
        statuses = []
        threads = [threading.Thread(target=lambda: statuses.append(post(big.encode()))) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        peak = mib("VmHWM:")
        time.sleep(10)
        settled = mib("VmRSS:")
        print(f"{os.path.basename(binary)}: before {before:.1f} MiB; one {len(many) / 1e6:.1f} MB body of 100k messages "
              f"(answered {status_many}): peak {peak_many:.1f} MiB, 1 s later {after_many:.1f} MiB; "
              f"4 x {len(big) / 1e6:.1f} MB ({statuses}): peak {peak:.1f} MiB, 10 s later {settled:.1f} MiB")
    finally:
        p.terminate()
        p.wait()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
