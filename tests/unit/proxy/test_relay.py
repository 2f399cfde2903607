"""The stream relay's byte-level checks: error markers and the final usage, without re-encoding chunks."""

from __future__ import annotations

from vllm_pd.proxy.relay import StreamStats, chunk_has_error, error_event


def test_error_markers_are_found_and_content_mentioning_error_is_not():
    assert chunk_has_error(b'data: {"choices":[{"index":0,"text":"","finish_reason":"error"}]}\n\n')
    assert chunk_has_error(b'data: {"error": {"message": "boom", "code": 500}}\n\n')
    assert not chunk_has_error(b'data: {"choices":[{"text":"\\"error\\": none","finish_reason":null}]}\n\n')
    assert not chunk_has_error(b'data: {"choices":[{"text":"ok","finish_reason":"stop"}]}\n\n')


def test_usage_is_read_from_the_tail_even_when_split_across_chunks():
    stats = StreamStats(0.0)
    for chunk in (b'data: {"choices":[{"text":"a"}]}\n\n', b'data: {"choices":[{"text":"b"}]}\n\n',
                  b'data: {"choices":[],"usage":{"prompt_tokens":7,"total_', b'tokens":9,"completion_tokens":2}}\n\n',
                  b"data: [DONE]\n\n"):
        stats.see(chunk)
    assert stats.usage() == (7, 2)
    assert stats.output_tokens() == 2


def test_without_usage_tokens_are_counted_from_events():
    stats = StreamStats(0.0)
    stats.see(b'data: {"choices":[{"text":"a"}]}\n\ndata: {"choices":[{"text":"b"}]}\n\n')
    stats.see(b"data: [DONE]\n\n")
    assert stats.usage() == (None, None) and stats.output_tokens() == 2


def test_error_event_is_valid_sse_ending_the_stream():
    event = error_event("decoder died")
    assert event.startswith(b'data: {"error":{"message":"decoder died"') and event.endswith(b"data: [DONE]\n\n")
