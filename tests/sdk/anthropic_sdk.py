"""Drives the gateway with the official `anthropic` Python SDK.

Usage: python anthropic_sdk.py BASE_URL API_KEY MODEL
BASE_URL has no `/v1`. MODEL may route to any channel type; the upstream mock
answers the shared script (see tests/src/wire_mock.rs). Prints one line per
check and exits non-zero on the first failure.
"""

import base64
import sys

import anthropic

base_url, key, model = sys.argv[1], sys.argv[2], sys.argv[3]
client = anthropic.Anthropic(base_url=base_url, api_key=key, max_retries=0)
hi = [{"role": "user", "content": "hi"}]
weather = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}

msg = client.messages.create(model=model, max_tokens=100, messages=hi)
assert msg.content[0].type == "text" and msg.content[0].text == "Hello, world!", msg
assert msg.stop_reason == "end_turn", msg.stop_reason
assert msg.usage.output_tokens == 4, msg.usage
print("messages ok")

with client.messages.stream(model=model, max_tokens=100, messages=hi) as stream:
    text = "".join(stream.text_stream)
    final = stream.get_final_message()
assert text == "Hello, world!", text
assert final.usage.output_tokens == 4 and final.stop_reason == "end_turn", final
print("stream ok")

msg = client.messages.create(model=model, max_tokens=100, messages=hi, tools=[weather])
call = next(b for b in msg.content if b.type == "tool_use")
assert call.name == "get_weather" and call.input == {"city": "Paris"}, msg
assert msg.stop_reason == "tool_use", msg.stop_reason
answer = client.messages.create(
    model=model,
    max_tokens=100,
    tools=[weather],
    messages=hi
    + [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in msg.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}]},
    ],
)
assert answer.content[0].text == "It is sunny.", answer
print("tools ok")

with client.messages.stream(
    model=model, max_tokens=100, messages=[{"role": "user", "content": "two calls please"}], tools=[weather]
) as stream:
    final = stream.get_final_message()
calls = [b for b in final.content if b.type == "tool_use"]
assert [c.input for c in calls] == [{"city": "Paris"}, {"city": "Tokyo"}], final
assert final.stop_reason == "tool_use", final.stop_reason
print("streamed tool calls ok")

png = base64.b64encode(b"\x89PNG\r\n\x1a\n").decode()
msg = client.messages.create(
    model=model,
    max_tokens=100,
    system=[{"type": "text", "text": "You are terse."}],
    messages=[
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}},
            ],
        }
    ],
)
assert msg.content[0].text == "Hello, world!", msg
msg = client.messages.create(model=model, max_tokens=100, system="You are terse.", messages=hi)
assert msg.content[0].text == "Hello, world!", msg
print("image and system ok")

count = client.messages.count_tokens(model=model, messages=hi)
assert count.input_tokens > 0, count
print("count_tokens ok")

try:
    client.messages.create(model="no-such-model", max_tokens=10, messages=hi)
    raise AssertionError("an unknown model was accepted")
except anthropic.NotFoundError as e:
    assert e.status_code == 404
print("errors ok")
