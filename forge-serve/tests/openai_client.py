"""Talks to a running forge serve with the official OpenAI Python client.

Usage: openai_client.py BASE_URL MODEL_ID. Prints one JSON object with what
the client parsed; the Rust test (tests/openai_client.rs) checks it.
"""

import json
import sys

import openai
from openai import OpenAI

base, model = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=base + "/v1", api_key="forge-test-key", max_retries=0, timeout=60)
out = {"openai_version": openai.__version__}

out["models"] = [m.id for m in client.models.list().data]

chat = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "What does parse_header do?"}],
    max_tokens=16,
    temperature=0,
)
out["chat"] = {
    "object": chat.object,
    "content": chat.choices[0].message.content,
    "role": chat.choices[0].message.role,
    "finish_reason": chat.choices[0].finish_reason,
    "usage": chat.usage.model_dump(include={"prompt_tokens", "completion_tokens", "total_tokens"}),
    # Forge's extra field survives the client's pydantic models.
    "citations": (chat.model_extra or {}).get("citations"),
}

stream = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "What does parse_header do?"}],
    max_tokens=16,
    temperature=0,
    stream=True,
    stream_options={"include_usage": True},
)
pieces, finish, usage = [], [], None
for chunk in stream:
    for c in chunk.choices:
        if c.delta.content:
            pieces.append(c.delta.content)
        if c.finish_reason:
            finish.append(c.finish_reason)
    if chunk.usage is not None:
        usage = chunk.usage.completion_tokens
out["stream"] = {"content": "".join(pieces), "finish": finish, "completion_tokens": usage}

comp = client.completions.create(model=model, prompt="fn main() {", max_tokens=8, temperature=0)
out["completion"] = {"object": comp.object, "text": comp.choices[0].text,
                     "finish_reason": comp.choices[0].finish_reason}

no_rag = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "What does parse_header do?"}],
    max_tokens=4,
    extra_body={"retrieval": False},
)
out["no_rag_citations"] = (no_rag.model_extra or {}).get("citations")

errors = {}
try:
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
except openai.NotFoundError as e:
    errors["unknown_model"] = [e.status_code, e.code]
try:
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}], temperature=9)
except openai.BadRequestError as e:
    errors["bad_temperature"] = [e.status_code, e.code]
out["errors"] = errors
print(json.dumps(out))
