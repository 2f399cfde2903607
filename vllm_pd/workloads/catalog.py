"""Resolve a workload by name (chatbot, code, summarization, fixed:IN:OUT) or trace path."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vllm_pd.workloads.lengths import FixedLengths, ResampledLengths, builtin_distributions
from vllm_pd.workloads.spec import WorkloadError
from vllm_pd.workloads.traces import read_trace
from vllm_pd.workloads.workload import Workload


def workload_names() -> list[str]:
    """Names accepted by :func:`load_workload` besides ``fixed:IN:OUT`` and trace paths."""
    return sorted(builtin_distributions())


def load_workload(name_or_path: str, *, max_model_len: int | None = None) -> Workload:
    """A built-in workload, ``fixed:IN:OUT``, or a ``.jsonl``/``.csv`` trace file."""
    if name_or_path.startswith("fixed:"):
        return Workload(name_or_path, _fixed(name_or_path), max_model_len=max_model_len)
    builtin = builtin_distributions()
    if name_or_path in builtin:
        return Workload(name_or_path, builtin[name_or_path], max_model_len=max_model_len)
    path = Path(name_or_path)
    if path.suffix in (".jsonl", ".csv"):
        trace = tuple(read_trace(path))
        lengths = ResampledLengths(
            np.array([r.input_tokens for r in trace], dtype=np.int64),
            np.array([r.output_tokens for r in trace], dtype=np.int64),
        )
        return Workload(path.name, lengths, trace=trace, max_model_len=max_model_len)
    raise WorkloadError(
        f"unknown workload {name_or_path!r}: use one of {', '.join(sorted(builtin))}, "
        "fixed:IN:OUT, or a .jsonl/.csv trace file"
    )


def _fixed(text: str) -> FixedLengths:
    parts = text.split(":")
    if len(parts) != 3 or not all(p.strip().isdigit() for p in parts[1:]):
        raise WorkloadError(f"bad fixed workload {text!r}: expected fixed:IN:OUT with integer token counts")
    return FixedLengths(int(parts[1]), int(parts[2]))
