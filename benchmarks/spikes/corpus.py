"""The training text: Python's own standard-library source, a fixed list of modules, read as ASCII bytes.

Always present with Python, no download. The exact text depends on the Python version (3.11 here), so
numbers are comparable between runs on the same interpreter.
"""

from __future__ import annotations

import functools
import sysconfig
from pathlib import Path

import torch

# Modules present in every CPython since 3.8, read in this order; the text is their concatenation.
MODULES = (
    "textwrap.py",
    "difflib.py",
    "argparse.py",
    "heapq.py",
    "fractions.py",
    "calendar.py",
    "shlex.py",
    "fnmatch.py",
    "statistics.py",
    "string.py",
    "bisect.py",
    "colorsys.py",
    "getopt.py",
    "gettext.py",
)
VOCAB = 128  # ASCII; any other byte reads as "?"


@functools.lru_cache(maxsize=4)
def corpus(max_chars: int = 400_000) -> torch.Tensor:
    """The corpus as a 1-D tensor of character ids in [0, VOCAB)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    parts = []
    for name in MODULES:
        path = root / name
        if path.is_file():
            parts.append(path.read_bytes())
    data = b"\n".join(parts)[:max_chars]
    if len(data) < 10_000:
        raise RuntimeError(f"too little standard-library text found under {root} ({len(data)} bytes)")
    ids = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(torch.long)
    return ids.masked_fill(ids >= VOCAB, ord("?"))


def batches(data: torch.Tensor, batch: int, context: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A random batch of (input, next-character target) windows drawn with ``generator``."""
    starts = torch.randint(0, len(data) - context - 1, (batch,), generator=generator)
    offsets = torch.arange(context)
    windows = data[starts[:, None] + offsets]
    targets = data[starts[:, None] + offsets + 1]
    return windows, targets
