"""Plain PyTorch under DistributedDataParallel on 2 gloo ranks spawned from pytest."""

from __future__ import annotations

import pytest

from tests.distributed import workers
from tests.distributed.ranks import run_ranks

pytestmark = pytest.mark.distributed


def assert_same_norms(measured, reference, *, metrics=("grad_norm", "weight_norm"), rel=1e-4):
    """Per-layer norms at every sampled step equal the single-process run's."""
    assert [layer["name"] for layer in measured] == [layer["name"] for layer in reference]
    for got, want in zip(measured, reference):
        assert got["history"]["step"] == want["history"]["step"]
        for metric in (m for m in metrics if m in want["history"]):
            assert got["history"][metric] == pytest.approx(want["history"][metric], rel=rel), (got["name"], metric)


def test_ddp_every_rank_measures_rank_zero_alone_reports(tmp_path):
    ranks = run_ranks(workers.fit, model="sick", how="ddp", steps=20, summary=str(tmp_path / "gw-{rank}.json"))
    reference = workers.fit(0, 1, model="sick", how="none", steps=20)
    for rank in ranks:
        assert rank["findings"].get("vanishing_gradients") in ("warning", "critical")
        assert_same_norms(rank["layers"], reference["layers"])  # gradients averaged by DDP = full-batch ones
    zero, one = ranks
    assert any("vanishing_gradients" in w for w in zero["warnings"]) and "vanishing_gradients" in zero["printed"]
    assert one["warnings"] == [] and one["printed"] == "", "only rank 0 warns and prints"
    assert zero["wrote"] and not one["wrote"], "only rank 0 writes the summary"


def test_ddp_every_steps_gradient_norm_is_the_averaged_one_before_the_loop_clips_it():
    ranks = run_ranks(workers.fit, model="healthy", how="ddp", steps=12, clip=1e-3)
    reference = workers.fit(0, 1, model="healthy", how="none", steps=12, clip=1e-3)
    norms = [n for sample in reference["step_grads"] for n in sample]
    assert len(norms) == 11 and min(norms) > 1e-2  # the full batch's gradient, read before the clip to 1e-3
    for rank in ranks:
        assert [n for sample in rank["step_grads"] for n in sample] == pytest.approx(norms, rel=1e-4)
        assert rank["layers"][0]["history"]["grad_norm"] == pytest.approx(reference["layers"][0]["history"]["grad_norm"], rel=1e-4)


def test_fault_on_one_rank_disables_the_collector_everywhere_without_a_hang():
    ranks = run_ranks(workers.fit, model="healthy", how="ddp", steps=30, fault="capture_gradients", timeout=60)
    zero, one = ranks
    assert zero["steps_run"] == one["steps_run"] == 30
    assert any("injected fault in capture_gradients" in note for note in one["notes"])
    assert any("pytorch collector" in note and "failure on rank 1" in note for note in zero["notes"])
    assert any("failure on rank 1" in w for w in zero["warnings"])
    assert zero["layers"][0]["history"]["step"] == [0], "samples stop on every rank at the failure (step 1)"
    assert [w for w in one["warnings"] if "injected fault" not in w] == [], "rank 1 warns only about its own fault"


def test_ranks_stop_together_when_only_one_rank_finds_the_problem():
    ranks = run_ranks(workers.fit, model="sick", how="ddp", steps=60, fault="observe", stop_on="warning", timeout=60)
    zero, one = ranks
    assert "vanishing_gradients" in zero["findings"] and "vanishing_gradients" not in one["findings"]
    assert zero["steps_run"] == one["steps_run"] < 60, "both ranks leave the loop at the same step"


def test_watch_called_before_init_process_group_still_reports_from_rank_zero_only():
    zero, one = run_ranks(workers.fit, init_process_group=False, model="sick", how="none", steps=20, late_init=True)
    assert "vanishing_gradients" in zero["findings"] and "vanishing_gradients" in zero["printed"]
    assert one["warnings"] == [] and one["printed"] == ""
