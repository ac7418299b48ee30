"""Which elements of a large weight its update is measured on."""

from __future__ import annotations

import random

import pytest

from gradwatch.blocks import BLOCK, LARGE_PARAM, MIN_SUBSET, UPDATE_SUBSAMPLE, sampled_elements, update_stride


@pytest.mark.parametrize("rows, row", [(1024, 2048), (3200, 3200), (1024, 256), (50257, 768), (300, 300)])
def test_a_large_weight_keeps_about_one_sixty_fourth_in_blocks_shifting_along_its_rows(rows, row):
    numel = rows * row
    stride = update_stride(numel, row)
    kept = sampled_elements(numel, stride)
    assert stride > 1 and all(stride % k for k in range(2, stride))
    target = max(numel // UPDATE_SUBSAMPLE, MIN_SUBSET)
    assert target <= kept <= 2 * target
    columns = {(block * stride * BLOCK) % row for block in range(min(numel // (stride * BLOCK), 4 * row))}
    assert len(columns) > 1, "the sampled blocks do not all start in the same column"


def test_a_small_weight_is_measured_whole():
    assert update_stride(LARGE_PARAM, 256) == 1 and sampled_elements(LARGE_PARAM, 1) == LARGE_PARAM


def test_the_estimate_of_a_squared_update_is_unbiased_over_random_updates():
    random.seed(0)
    numel, row = 512 * 512, 512
    stride = update_stride(numel, row)
    kept = sampled_elements(numel, stride)
    ratios = []
    for _ in range(20):
        delta = [random.gauss(0, 1) * (1 + (i % row) / row) for i in range(numel)]
        sample = [v for b in range(0, numel // BLOCK, stride) for v in delta[b * BLOCK : (b + 1) * BLOCK]]
        assert len(sample) == kept
        ratios.append(sum(v * v for v in sample) * numel / kept / sum(v * v for v in delta))
    assert sum(ratios) / len(ratios) == pytest.approx(1.0, abs=0.01)
