"""``vllm-pd bench``: goodput benchmarking against any OpenAI-compatible endpoint.

A run sends a seeded workload at each of several request rates, streams every response, writes one
JSONL row per request, and summarises attainment (share of requests meeting both the TTFT and the
TPOT SLO) and goodput (the highest rate at which the attainment target still holds) per endpoint.
"""
