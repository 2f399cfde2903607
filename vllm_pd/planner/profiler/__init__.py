"""``vllm-pd profile``: measure a live vLLM server and fit the DistServe-form latency coefficients."""
