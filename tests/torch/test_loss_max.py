"""``loss_max``: the highest loss since the previous sample, kept on the device between samples."""

import math

import torch

from integrations.torch_stats import TorchCollector


def test_the_highest_loss_between_samples_is_kept_without_leaving_the_device() -> None:
    collector = TorchCollector(torch.nn.Linear(3, 2))
    for loss in (1.0, 5.0, 3.0):
        collector.add_loss(torch.tensor(loss))
    collector.add_loss(2.0)  # a loss handed over as a number counts too
    first = collector.flush(0)
    assert first.loss == 2.75 and first.loss_max == 5.0
    assert collector.flush(1).loss_max is None  # no loss since the previous sample: not measured
    collector.add_loss(torch.tensor(float("nan")))
    nan_max = collector.flush(2).loss_max
    assert nan_max is not None and math.isnan(nan_max)  # a NaN loss is evidence, never dropped
