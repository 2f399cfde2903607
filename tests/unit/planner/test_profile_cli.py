"""``vllm-pd profile`` errors name what went wrong, even when the exception itself carries no message."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from vllm_pd.cli import main


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
