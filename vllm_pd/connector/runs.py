"""Block pairs contiguous on both sides, merged into runs: one descriptor per run per region."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np


class Run(NamedTuple):
    """``length`` blocks: local ``local_start..`` receive remote ``remote_start..``."""

    local_start: int
    remote_start: int
    length: int


def merge_runs(local_ids: Sequence[int], remote_ids: Sequence[int]) -> list[Run]:
    """Merge pairs (local_ids[i], remote_ids[i]) into maximal runs, in order."""
    if len(local_ids) != len(remote_ids):
        raise ValueError(f"{len(local_ids)} local blocks but {len(remote_ids)} remote blocks")
    if not local_ids:
        return []
    local = np.asarray(local_ids, dtype=np.int64)
    remote = np.asarray(remote_ids, dtype=np.int64)
    # A run breaks where either side does not advance by exactly one block.
    breaks = np.flatnonzero((np.diff(local) != 1) | (np.diff(remote) != 1)) + 1
    starts = np.concatenate(([0], breaks))
    lengths = np.diff(np.concatenate((starts, [len(local)])))
    return [Run(int(local[s]), int(remote[s]), int(n)) for s, n in zip(starts, lengths)]


def run_block_indices(runs: Sequence[Run], num_regions: int, region_blocks: int, side: str) -> np.ndarray:
    """Indices into a prepared per-region block descriptor list (region r, block b -> r*region_blocks+b).

    Ordered region by region and run by run, so that NIXL's descriptor merge turns each run of
    each region into one descriptor.
    """
    column = 0 if side == "local" else 1
    if not runs:
        return np.empty(0, dtype=np.int32)
    blocks = np.concatenate([np.arange(r[column], r[column] + r.length) for r in runs])
    offsets = np.arange(num_regions, dtype=np.int64)[:, None] * region_blocks
    return (offsets + blocks[None, :]).reshape(-1).astype(np.int32)
