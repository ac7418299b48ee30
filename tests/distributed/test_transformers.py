"""The Hugging Face Trainer callback under DDP (accelerate, gloo) on 2 CPU ranks."""

from __future__ import annotations

import pytest

from tests.distributed import workers
from tests.distributed.ranks import run_ranks

pytest.importorskip("transformers")
pytestmark = pytest.mark.distributed


def test_trainer_ddp_ranks_combine_stop_together_and_only_the_main_process_reports():
    zero, one = run_ranks(workers.trainer_fit, init_process_group=False, timeout=90, lr=30.0, steps=40, stop_on="critical")
    assert zero["world_size"] == one["world_size"] == 2
    assert zero["layers"] == one["layers"], "every rank sees the combined statistics"
    assert zero["findings"] == one["findings"] and {"nonfinite", "exploding_gradients"} & set(zero["findings"])
    assert zero["global_step"] == one["global_step"] < 40, "both ranks stop at the same step"
    assert zero["warnings"] and zero["printed"] and zero["logged"]
    assert one["warnings"] == [] and not one["printed"] and one["logged"] == []
