"""``gradwatch run`` on an unmodified Keras script: the drop-in's findings, the same training bit for bit, its exit code."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("keras")

from tests.torch.test_run import finished, lines, script, started

SCRIPT = """
import hashlib
import sys
import numpy as np
import keras

keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)
x = rng.normal(size=(256, 8)).astype("float32")
y = (x.sum(1, keepdims=True) > 0).astype("float32")
layers = [keras.Input((8,))]
for _ in range(10):  # ten sigmoid layers under plain SGD: the gradients vanish
    layers.append(keras.layers.Dense(32, activation="sigmoid"))
model = keras.Sequential(layers + [keras.layers.Dense(1, activation="sigmoid")])
model.compile(optimizer=keras.optimizers.SGD(0.05), loss="binary_crossentropy")
history = model.fit(x, y, batch_size=32, epochs=5, verbose=0CALLBACKS)
print("losses", [float(v).hex() for v in history.history["loss"]])
print("weights", hashlib.sha256(b"".join(w.tobytes() for w in model.get_weights())).hexdigest())
sys.exit(5)
"""
DROP_IN = ", callbacks=[GradWatchCallback(summary_path='drop-in.json')]"


def findings(path):
    return sorted((f["symptom"], f["severity"]) for f in json.loads(path.read_text())["findings"])


def test_an_unmodified_keras_fit_gets_the_drop_ins_findings_and_trains_bit_for_bit_as_without(tmp_path):
    run, own = tmp_path / "run", tmp_path / "own"  # two processes, not three: the framework's import is most of the time
    script(run, SCRIPT.replace("CALLBACKS", ""))
    script(own, "from gradwatch.integrations.keras import GradWatchCallback\n" + SCRIPT.replace("CALLBACKS", DROP_IN))
    runs = [started(run, "-m", "gradwatch.cli", "run", "train.py"), started(own, "train.py")]
    watched, drop_in = (finished(r) for r in runs)
    assert (watched.returncode, drop_in.returncode) == (5, 5), watched.stderr
    for prefix in ("losses", "weights"):  # the drop-in trains as the script alone does (its own tests): so does gradwatch run
        assert lines(watched.stdout, prefix) == lines(drop_in.stdout, prefix) != [], prefix
    summary = json.loads((run / "gradwatch-train.json").read_text())
    assert summary["framework"].startswith("keras") and summary["steps"] == 40
    assert findings(run / "gradwatch-train.json") == findings(own / "drop-in.json")
    assert "vanishing_gradients" in {symptom for symptom, _ in findings(run / "gradwatch-train.json")}
    assert watched.stderr.count("gradwatch · ") == 1
