#!/usr/bin/env python3
"""Drive `pragma serve` with the official `openai` Python client, unchanged.

Checks, against a running server (base URL as the first argument, e.g.
http://127.0.0.1:8040/v1) with a registered vector (second argument, e.g. `love`):
  - models.list() names the served model;
  - chat.completions.create: text, usage, finish_reason;
  - the same request streamed gives the same text;
  - extra_body={"pragma": {"steer": [...]}} changes the answer, and the response echoes it;
  - a following unsteered request equals the first one exactly (no state left behind);
  - completions.create with logprobs;
  - an unknown vector raises openai.BadRequestError with pragma's message.
Prints one line per check; exits 1 on the first failure.

Usage: python3 scripts/server/openai_client_check.py BASE_URL VECTOR [SCALE]
"""

import sys

import openai


def main() -> int:
    base, vector = sys.argv[1], sys.argv[2]
    scale = float(sys.argv[3]) if len(sys.argv) > 3 else 8.0
    client = openai.OpenAI(base_url=base, api_key="unused-on-loopback")
    model = client.models.list().data[0].id
    print(f"models.list: {model}")

    msgs = [{"role": "user", "content": "Tell me about your day."}]
    base_resp = client.chat.completions.create(model=model, messages=msgs, max_tokens=16, temperature=0)
    text = base_resp.choices[0].message.content
    u = base_resp.usage
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens, u
    assert base_resp.choices[0].finish_reason in ("stop", "length")
    print(f"chat: {text!r} ({u.completion_tokens} tokens, {base_resp.choices[0].finish_reason})")

    stream = client.chat.completions.create(model=model, messages=msgs, max_tokens=16, temperature=0, stream=True)
    streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert streamed == text, (streamed, text)
    print("stream: same text")

    steer = {"pragma": {"steer": [{"vector": vector, "scale": scale, "positions": "all"}]}}
    steered = client.chat.completions.create(
        model=model, messages=msgs, max_tokens=16, temperature=0, extra_body=steer
    )
    s_text = steered.choices[0].message.content
    assert s_text != text, "steering changed nothing"
    echo = steered.model_extra.get("pragma")
    assert echo and echo["steer"][0]["vector"] == vector, echo
    print(f"steered ({vector} x {scale}): {s_text!r}")

    again = client.chat.completions.create(model=model, messages=msgs, max_tokens=16, temperature=0)
    assert again.choices[0].message.content == text, "an unsteered request after a steered one differs"
    print("unsteered again: equal to the first answer")

    comp = client.completions.create(model=model, prompt="The cat", max_tokens=4, temperature=0, logprobs=2)
    lp = comp.choices[0].logprobs
    assert lp is not None and all(x <= 0 for x in lp.token_logprobs), lp
    print(f"completions: {comp.choices[0].text!r}, logprobs {[round(x, 3) for x in lp.token_logprobs]}")

    try:
        client.chat.completions.create(
            model=model, messages=msgs, max_tokens=4,
            extra_body={"pragma": {"steer": [{"vector": "no-such-vector", "scale": 1}]}},
        )
    except openai.BadRequestError as e:
        assert "no-such-vector" in str(e), e
        print(f"unknown vector: BadRequestError ({e.status_code})")
    else:
        raise AssertionError("an unknown vector was accepted")
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
