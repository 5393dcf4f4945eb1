"""The official `openai` SDK against channels of other wire formats.

Usage: python openai_cross.py BASE_URL API_KEY MODEL  (BASE_URL without /v1)
Prints one line per check and exits non-zero on the first failure.
"""

import json
import sys

import openai

base_url, key, model = sys.argv[1], sys.argv[2], sys.argv[3]
client = openai.OpenAI(base_url=base_url + "/v1", api_key=key, max_retries=0)
hi = [{"role": "user", "content": "hi"}]
tools = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]

chat = client.chat.completions.create(model=model, messages=hi)
assert chat.choices[0].message.content == "Hello, world!", chat
assert chat.choices[0].finish_reason == "stop" and chat.usage.completion_tokens == 4, chat
print("chat ok")

pieces, usage = [], None
for chunk in client.chat.completions.create(
    model=model, messages=hi, stream=True, stream_options={"include_usage": True}
):
    if chunk.choices and chunk.choices[0].delta.content:
        pieces.append(chunk.choices[0].delta.content)
    if chunk.usage:
        usage = chunk.usage
assert "".join(pieces) == "Hello, world!", pieces
assert usage is not None and usage.completion_tokens == 4, usage
print("stream ok")

chat = client.chat.completions.create(model=model, messages=hi, tools=tools)
call = chat.choices[0].message.tool_calls[0]
assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}, chat
assert chat.choices[0].finish_reason == "tool_calls", chat
follow = client.chat.completions.create(
    model=model,
    tools=tools,
    messages=hi
    + [
        chat.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ],
)
assert follow.choices[0].message.content == "It is sunny.", follow
print("tools ok")

calls, finish = {}, None
for chunk in client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "two calls please"}], tools=tools, stream=True
):
    if not chunk.choices:
        continue
    for tc in chunk.choices[0].delta.tool_calls or []:
        entry = calls.setdefault(tc.index, {"name": None, "args": ""})
        if tc.function and tc.function.name:
            entry["name"] = tc.function.name
        if tc.function and tc.function.arguments:
            entry["args"] += tc.function.arguments
    finish = chunk.choices[0].finish_reason or finish
got = [json.loads(calls[i]["args"]) for i in sorted(calls)]
assert got == [{"city": "Paris"}, {"city": "Tokyo"}], calls
assert all(c["name"] == "get_weather" for c in calls.values()) and finish == "tool_calls", (calls, finish)
print("streamed tool calls ok")

image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
chat = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": [{"type": "text", "text": "what?"}, image]}]
)
assert chat.choices[0].message.content == "Hello, world!", chat
print("image ok")

chat = client.chat.completions.create(model=model, messages=hi, max_tokens=2)
assert chat.choices[0].finish_reason == "length" and chat.choices[0].message.content == "Hello", chat
print("length ok")

resp = client.responses.create(model=model, input="hi")
assert resp.output_text == "Hello, world!", resp
text = ""
for event in client.responses.create(model=model, input="hi", stream=True):
    if event.type == "response.output_text.delta":
        text += event.delta
    if event.type == "response.completed":
        assert event.response.usage.output_tokens == 4, event.response.usage
assert text == "Hello, world!", text
print("responses ok")
