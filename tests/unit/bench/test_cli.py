"""Bad arguments end in one line naming the flag, exit status 2, and nothing sent or written."""

from __future__ import annotations

from pathlib import Path

import pytest

from vllm_pd.cli import main
from vllm_pd.launcher import free_port


def bench(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    try:
        code = main(["bench", *argv])
    except SystemExit as exc:  # argparse's own errors (types, choices)
        code = int(exc.code)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("argv, flag", [
    ([], "--url"),
    (["--url", "localhost:8000", "--rates", "1"], "--url"),
    (["--url", "http://127.0.0.1:9"], "--rates"),
    (["--url", "http://127.0.0.1:9", "--rates", "1,x"], "--rates"),
    (["--url", "http://127.0.0.1:9", "--rates", "0"], "--rates"),
    (["--url", "http://127.0.0.1:9", "--rates", "1", "--duration", "0"], "--duration"),
    (["--url", "http://127.0.0.1:9", "--rates", "1", "--duration", "soon"], "--duration"),
    (["--url", "http://127.0.0.1:9", "--rates", "1", "--num-requests", "-3"], "--num-requests"),
    (["--url", "http://127.0.0.1:9", "--rates", "1", "--arrival", "burst"], "--arrival"),
    (["--url", "http://127.0.0.1:9", "--rates", "1", "--cv", "3"], "--cv"),
    (["--url", "http://127.0.0.1:9", "--rates", "1", "--tpot-slo", "0"], "--tpot-slo"),
    (["--url", "http://127.0.0.1:9", "--rates", "1", "--attainment", "90"], "--attainment"),
    (["--url", "http://127.0.0.1:9", "--rates", "1", "--stop-below", "0.95"], "--stop-below"),
    (["--url", "http://127.0.0.1:9", "--compare", "a=http://127.0.0.1:9", "--rates", "1"], "--compare"),
    (["--compare", "a=http://127.0.0.1:9", "a=http://127.0.0.1:10", "--rates", "1"], "--compare"),
    (["--compare", "justaname", "--rates", "1"], "--compare"),
    (["report"], "DIR"),
])
def test_bad_flag_is_named(capsys: pytest.CaptureFixture[str], argv: list[str], flag: str) -> None:
    code, err = bench(capsys, *argv)
    assert code == 2
    assert flag in err
    assert "Traceback" not in err


def test_unreachable_endpoint_is_named_and_leaves_no_run_behind(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    out = tmp_path / "run"

    code, err = bench(capsys, "--url", url, "--rates", "1", "--num-requests", "1", "--out", str(out))

    assert code == 2
    assert f"cannot reach {url}" in err and "--url" in err
    assert not (out / "requests.jsonl").exists()


@pytest.mark.parametrize("argv", [
    ["--workload", "chatbots"],
    ["--workload", str(Path(__file__))],
    ["--workload", "fixed:10"],
    ["--workload", "chatbot", "--arrival", "trace"],
])
def test_bad_workload_is_named_before_any_server_is_contacted(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, err = bench(capsys, "--url", url, "--rates", "1", "--out", str(tmp_path / "run"), *argv)
    assert code == 2 and "--workload" in err and "cannot reach" not in err


def test_report_of_a_directory_without_a_run(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, err = bench(capsys, "report", str(tmp_path))
    assert code == 2 and "not a bench run directory" in err


def test_report_needs_out_to_merge(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, err = bench(capsys, "report", str(tmp_path / "a"), str(tmp_path / "b"))
    assert code == 2 and "--out" in err
