"""vllm-pd: disaggregated prefill/decode serving for vLLM.

Parts, kept apart so each runs where it belongs:
- ``vllm_pd.connector``: the KV-transfer connector (inside vLLM processes; imports nixl lazily).
- ``vllm_pd.proxy``: the OpenAI-compatible router that chooses a prefill/decode pair (no torch, no vLLM).
- ``vllm_pd.planner``: the placement simulator and search.
- ``vllm_pd.latency``: the one latency model shared by the proxy and the planner.
- ``vllm_pd.launcher``: starts and stops local vLLM servers (``vllm-pd up`` and the test fixtures).
"""

__version__ = "0.1.0"
