"""A user's own key (made with a session) through the official `openai` SDK.

Usage: python openai_user_key.py BASE_URL API_KEY
"""

import sys

import openai

base_url, key = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)

chat = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi there"}])
assert chat.choices[0].message.content == "Hello, world!", chat
print("chat ok")

text = "".join(
    c.choices[0].delta.content or ""
    for c in client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    if c.choices
)
assert text == "Hello, world!", text
print("stream ok")

assert "gpt-4o-mini" in [m.id for m in client.models.list()]
print("models ok")
