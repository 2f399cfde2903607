"""The placement planner: model specs, latency sources, the P/D simulator and the placement search.

``vllm-pd plan`` (``planner.cli``) and ``vllm-pd profile`` (``planner.profiler``); docs/planner.md.
"""
