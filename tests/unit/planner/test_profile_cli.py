"""``vllm-pd profile`` errors name what went wrong, even when the exception itself carries no message."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from vllm_pd.cli import main
from vllm_pd.planner.profiler.sweep import DECODE_ROUNDS, Profiler, ServerError


class _Stalled(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        time.sleep(2)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stalled_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stalled)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_a_server_slower_than_the_timeout_is_named_with_the_flag(stalled_server: str, tmp_path, capsys) -> None:
    code = main(["profile", "--url", stalled_server, "--out", str(tmp_path / "p.yaml"), "--timeout", "0.3"])

    assert code == 2
    err = capsys.readouterr().err
    assert f"a request to {stalled_server} took longer than --timeout 0.3 s" in err
    assert not (tmp_path / "p.yaml").exists()


def test_an_unreachable_server_is_named(tmp_path, capsys) -> None:
    code = main(["profile", "--url", "http://127.0.0.1:9", "--out", str(tmp_path / "p.yaml")])

    assert code == 2
    assert "cannot reach http://127.0.0.1:9" in capsys.readouterr().err


def test_an_unknown_dtype_is_named_before_any_request(tmp_path, capsys) -> None:
    config = tmp_path / "config.json"
    config.write_text('{"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2,'
                      ' "intermediate_size": 128, "vocab_size": 100, "torch_dtype": "float32"}')
    code = main(["profile", "--url", "http://127.0.0.1:9", "--out", str(tmp_path / "p.yaml"),
                 "--model-config", str(config), "--dtype", "float13"])

    assert code == 2
    err = capsys.readouterr().err
    assert "unknown dtype 'float13'" in err and "cannot reach" not in err


class _ScriptedProfiler(Profiler):
    """Makespans from a script instead of a server: (max_tokens -> next time)."""

    def __init__(self, times: dict[int, list[float]]) -> None:
        super().__init__(session=None, url="http://server", model="m", prompts=None)  # type: ignore[arg-type]
        self.times = {k: list(v) for k, v in times.items()}

    async def _makespan(self, context: int, batch: int, max_tokens: int) -> float:
        return self.times[max_tokens].pop(0)


def test_an_inverted_decode_round_is_measured_again_before_it_is_an_error() -> None:
    # Round 1 comes out inverted on a noisy host (long 0.043 s < short 0.054 s); round 2 settles it.
    profiler = _ScriptedProfiler({12: [0.043, 0.044, 0.080, 0.081], 1: [0.054, 0.055, 0.020, 0.021]})

    sample = asyncio.run(profiler.decode(context=32, batch=16, tokens=12, repeats=2))

    # medians of the four: long 0.0620, short 0.0375 -> (0.0620 - 0.0375) / 11 per step
    assert sample.seconds == pytest.approx((0.0620 - 0.0375) / 11)


def test_a_decode_point_inverted_in_every_round_names_the_flags() -> None:
    rounds = DECODE_ROUNDS * 2
    profiler = _ScriptedProfiler({12: [0.040] * rounds, 1: [0.050] * rounds})

    with pytest.raises(ServerError, match=r"took no longer than 16 x 1 .*medians of 6.*raise --decode-tokens"):
        asyncio.run(profiler.decode(context=32, batch=16, tokens=12, repeats=2))
