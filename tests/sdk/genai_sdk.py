"""Drives the gateway with the official `google-genai` Python SDK.

Usage: python genai_sdk.py BASE_URL API_KEY MODEL
Env: GENAI_API_VERSION (default v1beta; v1 exercises /v1/models/{m}:method),
EMBED_MODEL (empty: skip embeddings). Prints one line per check and exits
non-zero on the first failure.
"""

import os
import sys

from google import genai
from google.genai import errors, types

base_url, key, model = sys.argv[1], sys.argv[2], sys.argv[3]
client = genai.Client(
    api_key=key,
    http_options=types.HttpOptions(base_url=base_url, api_version=os.environ.get("GENAI_API_VERSION", "v1beta")),
)

resp = client.models.generate_content(model=model, contents="hi")
assert resp.text == "Hello, world!", resp
assert resp.usage_metadata.candidates_token_count == 4, resp.usage_metadata
print("generate ok")

text = "".join(chunk.text or "" for chunk in client.models.generate_content_stream(model=model, contents="hi"))
assert text == "Hello, world!", text
print("stream ok")

weather = types.Tool(
    function_declarations=[
        types.FunctionDeclaration(
            name="get_weather",
            description="Weather for a city",
            parameters=types.Schema(
                type="OBJECT", properties={"city": types.Schema(type="STRING")}, required=["city"]
            ),
        )
    ]
)
config = types.GenerateContentConfig(
    tools=[weather], automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True)
)
resp = client.models.generate_content(model=model, contents="weather?", config=config)
calls = resp.function_calls
assert calls and calls[0].name == "get_weather" and calls[0].args == {"city": "Paris"}, resp
history = [
    types.Content(role="user", parts=[types.Part.from_text(text="weather?")]),
    resp.candidates[0].content,
    types.Content(
        role="user", parts=[types.Part.from_function_response(name="get_weather", response={"result": "sunny"})]
    ),
]
resp = client.models.generate_content(model=model, contents=history, config=config)
assert resp.text == "It is sunny.", resp
print("tools ok")

calls = []
for chunk in client.models.generate_content_stream(model=model, contents="two calls please", config=config):
    calls.extend(chunk.function_calls or [])
assert [c.args for c in calls] == [{"city": "Paris"}, {"city": "Tokyo"}], calls
print("streamed tool calls ok")

png = types.Part.from_bytes(data=b"\x89PNG\r\n\x1a\n", mime_type="image/png")
resp = client.models.generate_content(model=model, contents=["what is this?", png])
assert resp.text == "Hello, world!", resp
print("image ok")

count = client.models.count_tokens(model=model, contents="hello there")
assert count.total_tokens > 0, count
print("count tokens ok")

embed_model = os.environ.get("EMBED_MODEL", "text-embedding-004")
if embed_model:
    result = client.models.embed_content(model=embed_model, contents="hello")
    assert len(result.embeddings[0].values) == 4, result
    print("embed ok")

try:
    client.models.generate_content(model="no-such-model", contents="hi")
    raise AssertionError("an unknown model was accepted")
except errors.ClientError as e:
    assert e.code == 404, e
print("errors ok")
