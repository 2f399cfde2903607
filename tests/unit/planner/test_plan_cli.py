"""``vllm-pd plan`` end to end through the CLI dispatcher: output, JSON and errors that name the problem."""

from __future__ import annotations

import json

import pytest

from vllm_pd.cli import main

SMALL = ["plan", "--model", "llama-2-7b", "--gpus", "2", "--gpus-per-node", "2", "--workload", "fixed:200:20",
         "--num-requests", "40", "--max-num-seqs", "16", "--max-instances", "1", "--no-progress"]


def test_json_plan(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*SMALL, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["verdict"] and out["best"]["goodput_rps"] > 0
    assert out["colocated"]["kind"] == "colocated"
    assert any("vllm serve meta-llama/Llama-2-7b-hf" in line for line in out["commands"])
    assert out["commands"][-1].startswith("vllm-pd proxy")


def test_table_plan(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(SMALL) == 0
    out = capsys.readouterr().out
    assert "verdict:" in out and "launch the winner" in out and "vllm-pd proxy" in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--hardware", "tpu9"], "unknown hardware 'tpu9'"),
        (["--workload", "nope"], "unknown workload 'nope'"),
        (["--model", "/no/such/dir"], "no such model config"),
        (["--model", "llama-3-70b"], "does not fit"),
        (["--ttft-slo", "0.00001", "--tpot-slo", "0.00001"], "no configuration meets"),
        (["--latency-profile", "/no/such.yaml"], "no such latency profile"),
        (["--cv", "3"], "--cv applies to --arrival gamma"),
    ],
)
def test_errors_are_one_clear_line(capsys: pytest.CaptureFixture[str], extra: list[str], message: str) -> None:
    assert main([*SMALL, *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize(("flag", "value"), [("--gpus", "0"), ("--ttft-slo", "-1"), ("--attainment", "1.5"),
                                             ("--gpus", "many")])
def test_bad_flag_values_name_the_flag(capsys: pytest.CaptureFixture[str], flag: str, value: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*SMALL, flag, value])
    assert exit_info.value.code == 2
    assert f"argument {flag}" in capsys.readouterr().err
