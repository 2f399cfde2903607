"""Run merging: block pairs contiguous on both sides become one run; nothing is lost or reordered."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vllm_pd.connector.runs import Run, merge_runs, run_block_indices


def test_fully_contiguous_blocks_are_one_run() -> None:
    assert merge_runs([10, 11, 12, 13], [3, 4, 5, 6]) == [Run(10, 3, 4)]


def test_a_break_on_either_side_splits_the_run() -> None:
    assert merge_runs([1, 2, 3, 7], [5, 6, 7, 8]) == [Run(1, 5, 3), Run(7, 8, 1)]
    assert merge_runs([1, 2, 3, 4], [5, 6, 9, 10]) == [Run(1, 5, 2), Run(3, 9, 2)]


def test_descending_ids_never_merge() -> None:
    assert merge_runs([3, 2], [3, 2]) == [Run(3, 3, 1), Run(2, 2, 1)]


def test_empty_and_mismatched() -> None:
    assert merge_runs([], []) == []
    with pytest.raises(ValueError, match="2 local blocks but 1 remote"):
        merge_runs([1, 2], [1])


pairs = st.lists(st.tuples(st.integers(0, 200), st.integers(0, 200)), max_size=60)


@given(pairs)
def test_runs_expand_back_to_the_exact_pairs(block_pairs: list[tuple[int, int]]) -> None:
    local = [p[0] for p in block_pairs]
    remote = [p[1] for p in block_pairs]
    runs = merge_runs(local, remote)
    expanded = [(r.local_start + i, r.remote_start + i) for r in runs for i in range(r.length)]
    assert expanded == block_pairs


@given(pairs)
def test_runs_are_maximal(block_pairs: list[tuple[int, int]]) -> None:
    runs = merge_runs([p[0] for p in block_pairs], [p[1] for p in block_pairs])
    for a, b in zip(runs, runs[1:]):
        assert (b.local_start, b.remote_start) != (a.local_start + a.length, a.remote_start + a.length)
    assert all(r.length >= 1 for r in runs)


@given(st.lists(st.integers(0, 50), min_size=1, max_size=30, unique=True), st.integers(1, 4))
def test_indices_address_each_region_block(blocks: list[int], regions: int) -> None:
    runs = merge_runs(blocks, blocks)
    idx = run_block_indices(runs, regions, region_blocks=64, side="local")
    expected = [r * 64 + b for r in range(regions) for b in blocks]
    assert idx.dtype == np.int32 and idx.tolist() == expected


def test_local_and_remote_indices_use_their_own_side() -> None:
    runs = [Run(local_start=5, remote_start=40, length=2)]
    assert run_block_indices(runs, 2, 100, "local").tolist() == [5, 6, 105, 106]
    assert run_block_indices(runs, 2, 50, "remote").tolist() == [40, 41, 90, 91]
