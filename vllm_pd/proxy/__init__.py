"""The proxy router: OpenAI-compatible, picks a prefill/decode pair (or local prefill) per request.

Imports neither torch nor vLLM, so it runs on a small box in front of the servers.
"""
