"""Drives the gateway with the official `openai` Python SDK.

Usage: python openai_sdk.py BASE_URL API_KEY
Prints one line per check and exits non-zero on the first failure.
"""

import sys

import openai

base_url, key = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)

chat = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi there"}])
assert chat.choices[0].message.content == "Hello, world!", chat
assert chat.usage is not None and chat.usage.completion_tokens == 4, chat.usage
print("chat ok")

pieces = []
usage = None
for chunk in client.chat.completions.create(
    model="gpt-4o-mini",
    messages=[{"role": "user", "content": "hi"}],
    stream=True,
    stream_options={"include_usage": True},
):
    if chunk.choices and chunk.choices[0].delta.content:
        pieces.append(chunk.choices[0].delta.content)
    if chunk.usage:
        usage = chunk.usage
assert "".join(pieces) == "Hello, world!", pieces
assert usage is not None and usage.completion_tokens == 4, usage
print("stream ok")

emb = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
assert len(emb.data) == 2 and len(emb.data[0].embedding) == 4, emb
print("embeddings ok")

models = [m.id for m in client.models.list()]
assert "gpt-4o-mini" in models, models
assert client.models.retrieve("gpt-4o-mini").id == "gpt-4o-mini"
print("models ok")

try:
    client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    raise SystemExit("expected NotFoundError")
except openai.NotFoundError as e:
    assert e.status_code == 404 and e.code == "model_not_found", e
print("not found ok")

try:
    openai.OpenAI(base_url=base_url, api_key="sk-wrong", max_retries=0).models.list()
    raise SystemExit("expected AuthenticationError")
except openai.AuthenticationError as e:
    assert e.code == "invalid_api_key", e
print("auth error ok")

try:
    for _ in client.chat.completions.create(model="broken-stream", messages=[{"role": "user", "content": "x"}], stream=True):
        pass
    raise SystemExit("expected APIError from the error event")
except openai.APIError as e:
    assert "upstream stream failed" in str(e.message), e
print("mid-stream error ok")
