"""Settings are checked at startup; every error names the setting."""

from __future__ import annotations

import pytest

from vllm_pd.proxy.config import ConfigError, PoolConfig, ProxyConfig, load_config
from vllm_pd.slo import SLO

P, D = "http://127.0.0.1:8100", "http://127.0.0.1:8200"


def test_flags_override_the_yaml_file(tmp_path):
    path = tmp_path / "proxy.yaml"
    path.write_text(f"decode: [{D}]\nprefill: [{P}/]\npolicy: least-loaded\nslo: {{ttft_s: 1.0, tpot_s: 0.1}}\n"
                    "timeouts: {prefill_s: 5}\n")

    config = load_config(path, {"policy": "round-robin", "slo.tpot_s": 0.02, "port": 9000})

    assert config.pool == PoolConfig(prefill=(P,), decode=(D,))
    assert (config.policy, config.port) == ("round-robin", 9000)
    assert config.slo == SLO(ttft_s=1.0, tpot_s=0.02)
    assert config.timeouts.prefill_s == 5


def test_per_model_pools(tmp_path):
    path = tmp_path / "proxy.yaml"
    path.write_text(f"models:\n  big: {{prefill: [{P}], decode: [{D}]}}\n  small: {{both: [http://h:1]}}\n")

    config = load_config(path, {})

    assert config.pool_for("big") == PoolConfig(prefill=(P,), decode=(D,))
    assert config.pool_for("small").both == ("http://h:1",)
    assert config.pool_for("other") is None


@pytest.mark.parametrize("overrides, setting", [
    ({"decode": ["localhost:8000"]}, "decode[0]"),
    ({"decode": ["http://h:99999"]}, "decode[0]"),
    ({"decode": ["http://h:1/v1/completions"]}, "decode[0]"),
    ({"prefill": [P]}, "--decode"),
    ({"decode": [D], "prefill": [D]}, "listed twice"),
    ({"decode": [D], "policy": "fastest"}, "policy"),
    ({"decode": [D], "admission": "drop"}, "admission"),
    ({"decode": [D], "slo.ttft_s": 0}, "ttft-slo"),
    ({"decode": [D], "timeouts.prefill_s": -1}, "timeouts.prefill_s"),
    ({"decode": [D], "latency_profile": "/no/such/file.yaml"}, "latency_profile"),
    ({"decode": [D], "max_prefill_attempts": 0}, "max_prefill_attempts"),
    ({"decode": [D], "colour": "blue"}, "colour"),
    ({}, "--decode"),
])
def test_bad_settings_name_the_setting(overrides, setting):
    with pytest.raises(ConfigError, match=setting.replace("[", r"\[").replace("]", r"\]")):
        load_config(None, overrides)


def test_unreadable_or_non_mapping_yaml(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="--config"):
        load_config(bad, {"decode": [D]})
    with pytest.raises(ConfigError, match="--config"):
        load_config(tmp_path / "missing.yaml", {"decode": [D]})


def test_defaults_are_valid():
    config = ProxyConfig(pool=PoolConfig(decode=(D,)))
    assert config.policy == "goodput" and config.all_urls() == [D]


def test_cli_rejects_bad_flags_with_exit_code_2(capsys):
    from vllm_pd.cli import main

    assert main(["proxy", "--decode", "not-a-url"]) == 2
    assert "decode[0]" in capsys.readouterr().err
