"""FSDP2 (``fully_shard``) on 2 gloo ranks: statistics from local shards, combined without gathering a parameter."""

from __future__ import annotations

import importlib.util

import pytest

from tests.distributed import workers
from tests.distributed.ranks import run_ranks
from tests.distributed.test_ddp import assert_same_norms

pytestmark = [
    pytest.mark.distributed,
    pytest.mark.skipif(importlib.util.find_spec("torch.distributed.fsdp") is None, reason="needs torch.distributed.fsdp"),
]


def test_fsdp2_sick_model_reports_vanishing_with_the_single_process_norms(tmp_path):
    ranks = run_ranks(workers.fit, model="sick", how="fsdp2", steps=12, summary=str(tmp_path / "gw-{rank}.json"))
    reference = workers.fit(0, 1, model="sick", how="none", steps=12)
    zero, one = ranks
    assert zero["layers"][0]["history"]["step"] == [0, 1, 2, 4, 8, 10]
    for rank in ranks:
        assert rank["findings"].get("vanishing_gradients") in ("warning", "critical")
        assert_same_norms(rank["layers"], reference["layers"], metrics=("grad_norm", "weight_norm", "update_norm", "zero_grad_rows"))
        got, want = sum(rank["step_grads"], ())[:11], sum(reference["step_grads"], ())[:11]  # steps 0-10 (samples to step 10)
        assert len(got) == len(want) == 11 and all(abs(a - b) <= 1e-4 * b for a, b in zip(got, want)), (got, want)  # summed over shards
    assert zero["wrote"] and not one["wrote"] and one["warnings"] == []
    for rank in ranks:  # every watched parameter was read as this rank's shard only
        assert all(0 < shard < whole for shard, whole in rank["sizes"]), rank["sizes"]


def test_fsdp2_healthy_model_reports_nothing():
    zero, one = run_ranks(workers.fit, model="healthy", how="fsdp2", steps=60)
    assert zero["findings"] == {} == one["findings"]
    assert zero["notes"] == [], "nothing was disabled"
    assert len(zero["layers"][0]["history"]["step"]) == 10


def test_fsdp2_dead_unit_rows_are_counted_over_the_shards():
    zero, _ = run_ranks(workers.fit, model="dead", how="fsdp2", steps=5)
    reference = workers.fit(0, 1, model="dead", how="none", steps=5)
    assert_same_norms(zero["layers"], reference["layers"], metrics=("grad_norm", "zero_grad_rows"))
    rows = {layer["name"]: layer["history"].get("zero_grad_rows") for layer in zero["layers"]}
    assert rows["model[2]"][-1] > 0.9, "nearly every unit of the dead layer has an all-zero gradient row"
