"""The official `openai` Python SDK's embeddings through converted channels.

Usage: python openai_embeddings.py BASE_URL API_KEY MODEL...
For each MODEL (a Gemini or Cohere channel's), asks for base64 explicitly
(the SDK hands the string back as it came) and by default (the SDK asks for
base64 and decodes it), and checks both give the upstream's numbers, not
zeros. Prints one line per check and exits non-zero on the first failure.
"""

import array
import base64
import sys

import openai

base_url, key, models = sys.argv[1], sys.argv[2], sys.argv[3:]
client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)
want = [0.1, 0.2, 0.3, 0.4]


def close(got):
    return len(got) == len(want) and all(abs(a - b) < 1e-6 for a, b in zip(got, want))


for model in models:
    emb = client.embeddings.create(model=model, input=["hello world", "hi"], encoding_format="base64")
    assert len(emb.data) == 2, emb
    for d in emb.data:
        assert isinstance(d.embedding, str), f"{model}: base64 string expected, got {d.embedding!r}"
        got = array.array("f", base64.b64decode(d.embedding)).tolist()
        assert close(got), f"{model}: {got}"
    assert emb.usage.prompt_tokens > 0 and emb.usage.total_tokens == emb.usage.prompt_tokens, emb.usage
    print(f"{model} base64 ok")
    emb = client.embeddings.create(model=model, input="hello world")
    assert close(emb.data[0].embedding), f"{model}: {emb.data[0].embedding}"
    print(f"{model} default ok")
