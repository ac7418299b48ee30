"""Loss spikes and divergence in tiny GPT-style models (issue 28): a sweep, an oracle, gradwatch against two baselines.

``python -m benchmarks.spikes`` trains a tiny character-level GPT (``model.py``) on Python's own standard-library
source (``corpus.py``) across peak learning rates, warmup on/off, qk-layernorm, z-loss and Adam epsilon, with
fixed seeds, one thread. The oracle (``oracle.py``, no gradwatch) labels each run from its loss: diverged (with
the step), spiked, stable. In the same run, on the same steps, three detectors watch (``detectors.py``):
gradwatch's ``watch()`` at its defaults, a ZClip-style z-score of the global gradient norm, and Lightning's
``SpikeDetection`` fed the loss. gradwatch's warning step is the step its first finding among ``--ids`` was
raised during training (the ``first_step`` its final report gives is a column of its own: a detector may date
a finding back). The table gives each detector's warning step and lead time per run, and the
summary the issue's targets are read from. ``--save-traces DIR`` writes per-step traces for offline study.
"""
