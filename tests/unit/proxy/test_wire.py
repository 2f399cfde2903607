"""The two legs' bodies and client-request validation (the P/D protocol, byte for byte)."""

from __future__ import annotations

import msgspec
import pytest

from vllm_pd.proxy.wire import CHAT, COMPLETIONS, BadRequest, decode_body, parse_request, prefill_body


def parse(body: object, endpoint: str = COMPLETIONS):
    return parse_request(endpoint, msgspec.json.encode(body))


def test_prefill_leg_asks_for_one_token_without_streaming():
    req = parse({"model": "m", "prompt": "hi", "max_tokens": 50, "max_completion_tokens": 40, "stream": True,
                 "stream_options": {"include_usage": True}, "min_tokens": 5, "min_completion_tokens": 5,
                 "temperature": 0})

    leg = msgspec.json.decode(prefill_body(req))

    assert leg == {"model": "m", "prompt": "hi", "max_tokens": 1, "max_completion_tokens": 1, "stream": False,
                   "temperature": 0, "kv_transfer_params": {"do_remote_decode": True, "do_remote_prefill": False}}


def test_prefill_leg_adds_no_max_completion_tokens_the_client_did_not_send():
    leg = msgspec.json.decode(prefill_body(parse({"prompt": "hi"})))
    assert "max_completion_tokens" not in leg and leg["max_tokens"] == 1


def test_decode_leg_is_the_original_request_plus_the_returned_params():
    req = parse({"model": "m", "prompt": "hi", "max_tokens": 50, "stream": True, "min_tokens": 5})
    params = {"remote_engine_id": "e", "remote_block_ids": [[1, 2]], "remote_host": "10.0.0.1"}

    assert msgspec.json.decode(decode_body(req, params)) == {**req.body, "kv_transfer_params": params}
    assert msgspec.json.decode(decode_body(req, None)) == req.body


def test_client_kv_transfer_params_are_dropped_on_both_legs():
    req = parse({"prompt": "hi", "kv_transfer_params": {"remote_host": "203.0.113.9", "do_remote_prefill": True}})

    assert "kv_transfer_params" not in req.body
    assert msgspec.json.decode(prefill_body(req))["kv_transfer_params"] == {"do_remote_decode": True,
                                                                            "do_remote_prefill": False}
    assert "kv_transfer_params" not in msgspec.json.decode(decode_body(req, None))


@pytest.mark.parametrize("prompt, text, ids", [
    ("abc", "abc", 0), (["ab", "c"], "abc", 0), ([1, 2, 3], "", 3), ([[1, 2], [3]], "", 3),
])
def test_completion_prompt_forms(prompt, text, ids):
    req = parse({"prompt": prompt})
    assert (req.prompt_text, req.prompt_ids) == (text, ids)


def test_chat_prompt_text_joins_message_contents():
    req = parse({"messages": [{"role": "system", "content": "be brief"},
                              {"role": "user", "content": [{"type": "text", "text": "hello"}]}]}, CHAT)
    assert req.prompt_text == "be brief\nhello"


@pytest.mark.parametrize("raw, message", [
    (b"{nope", "not valid JSON"),
    (b"[1, 2]", "JSON object"),
    (b'{"prompt": 5}', "'prompt'"),
    (b'{"prompt": "x", "stream": "yes"}', "'stream'"),
    (b'{"prompt": "x", "max_tokens": 0}', "'max_tokens'"),
    (b'{"prompt": "x", "model": 3}', "'model'"),
])
def test_malformed_completion_requests_are_rejected_with_a_reason(raw, message):
    with pytest.raises(BadRequest, match=message):
        parse_request(COMPLETIONS, raw)


@pytest.mark.parametrize("body", [{}, {"messages": []}, {"messages": ["hi"]}, {"messages": [{"content": "x"}]}])
def test_malformed_chat_requests_are_rejected(body):
    with pytest.raises(BadRequest, match="messages"):
        parse(body, CHAT)


def test_prefix_key_only_for_long_prompts_and_equal_for_equal_prefixes():
    long_a = parse({"prompt": "x" * 2000 + "tail a"})
    long_b = parse({"prompt": "x" * 2000 + "tail b"})
    assert parse({"prompt": "short"}).prefix_key is None
    assert long_a.prefix_key is not None and long_a.prefix_key == long_b.prefix_key


def test_prompts_are_counted_with_the_model_directory_tokenizer(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from vllm_pd.proxy.tokens import PromptCounter

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel()
    tokenizer.train_from_iterator(["the decode instance pulls the blocks"] * 10, trainers.BpeTrainer(vocab_size=300))
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    text = "the decode instance pulls the KV blocks of the prompt"

    counter = PromptCounter()

    assert counter.count(text, model=str(tmp_path)) == len(tokenizer.encode(text, add_special_tokens=False).ids)
    assert counter.count(text, model="not-a-directory") == round(len(text) / 4)


def test_estimated_counts_are_corrected_from_usage():
    from vllm_pd.proxy.tokens import PromptCounter

    counter = PromptCounter()
    for _ in range(60):
        counter.observe(text_bytes=1000, prompt_tokens=500)  # this model averages 2 bytes per token
    assert counter.count("x" * 1000) == pytest.approx(500, rel=0.02)
