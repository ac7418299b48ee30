"""Data for the clinic cases that need no torch: the teacher task of ``gradwatch.demo`` as stored arrays.

``teacher_2048.npz`` holds ``gradwatch.demo.teacher_data(2048)`` exactly (``tests/torch`` checks it), so
the Keras cases train on the same samples as the PyTorch ones without importing torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

STORED = Path(__file__).with_name("teacher_2048.npz")


def teacher_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 2048 Gaussian inputs (float32, 16 features) and their labels (3 classes) of the demo's teacher task."""
    with np.load(STORED) as stored:
        return stored["x"], stored["y"]
