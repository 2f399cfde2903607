"""Workloads shared by the planner's simulator and the benchmark: request lengths and arrival times.

``load_workload(name_or_path)`` gives a :class:`Workload`; ``Workload.sample(rate=..., ...)`` gives a
seeded, deterministic list of :class:`RequestSpec`.
"""

from vllm_pd.workloads.catalog import load_workload, workload_names
from vllm_pd.workloads.spec import RequestSpec, WorkloadError
from vllm_pd.workloads.workload import ARRIVALS, Workload

__all__ = ["ARRIVALS", "RequestSpec", "Workload", "WorkloadError", "load_workload", "workload_names"]
