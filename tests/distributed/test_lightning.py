"""The Lightning callback under an FSDP2 strategy (``ModelParallelStrategy``) on 2 CPU ranks."""

from __future__ import annotations

import pytest

from tests.distributed import workers
from tests.distributed.ranks import run_ranks

pytest.importorskip("lightning")
pytestmark = pytest.mark.distributed


def test_lightning_fsdp2_sick_model_reports_vanishing_once(tmp_path):
    zero, one = run_ranks(
        workers.lightning_fit, init_process_group=False, timeout=90, model="sick", steps=12, summary=str(tmp_path / "gw-{rank}.json")
    )
    for rank in (zero, one):
        assert rank["findings"].get("vanishing_gradients") in ("warning", "critical"), rank["findings"]
        assert rank["sharded"] > 0, "the callback measured DTensor shards"
        assert rank["notes"] == []
    assert zero["layers"] == one["layers"], "every rank sees the combined statistics"
    assert zero["wrote"] and not one["wrote"] and one["warnings"] == []
    assert any("vanishing_gradients" in w for w in zero["warnings"])
