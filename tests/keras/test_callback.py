"""The Keras callback on real tiny fits (TensorFlow in this process; each backend in a subprocess)."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import textwrap
import warnings

import jsonschema
import keras
import numpy as np
import pytest

import gradwatch.console
from benchmarks.clinic.keras_cases import case_loss, data, dense_stack, fit, sgd
from gradwatch import GradWatchWarning
from gradwatch.detectors import VanishingGradients
from gradwatch.integrations.keras import GradWatchCallback
from gradwatch.integrations.keras_stats import KerasCollector
from gradwatch.report import Report
from gradwatch.summary_check import schema_path


def test_deep_sigmoid_stack_summary_and_remedies(tmp_path):
    callback = GradWatchCallback(summary_path=tmp_path / "gw.json", print_report=False)
    with pytest.warns(GradWatchWarning, match="vanishing_gradients"):
        report = fit(model := dense_stack("sigmoid", 10), sgd(0.05), callback)
    summary = json.loads((tmp_path / "gw.json").read_text())
    jsonschema.validate(summary, json.loads(schema_path().read_text()))
    assert summary["framework"] == "keras/tensorflow" and summary["steps"] == 320
    vanishing = report.finding("vanishing_gradients")
    assert vanishing.layers[0] == model.layers[0].name and vanishing.remedies[0].id == "relu_family"
    assert vanishing.remedies[0].why.startswith("10 of your 11 layers are followed by Sigmoid")


def test_epoch_logs_reach_csv_logger_and_the_optimizer_is_restored(tmp_path):
    model = dense_stack("relu", 3, kernel_initializer="he_normal")
    model.compile(optimizer=sgd(0.05), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = data()
    callback = GradWatchCallback(print_report=False, log_metrics=True)
    log = tmp_path / "log.csv"
    model.fit(x, y, batch_size=64, epochs=2, verbose=0, callbacks=[callback, keras.callbacks.CSVLogger(str(log))])
    rows = list(csv.DictReader(open(log)))
    assert len(rows) == 2 and float(rows[1]["gradwatch/grad_norm"]) > 0 and rows[1]["gradwatch/findings"] == "0.0"
    assert "apply" not in vars(model.optimizer), "the wrapper is removed after fit"
    model.fit(x, y, batch_size=64, epochs=1, verbose=0, callbacks=[callback])  # reusable across fits
    assert callback.session.report() is callback.report, "one way to the report on every adapter"
    assert callback.report.steps == 96 and callback.report.layers[0]["history"]["step"][-1] == 80


def test_gradwatch_values_stay_off_the_progress_bar_by_default(capsys):
    model = dense_stack("relu", 2)
    model.compile(optimizer=sgd(0.01), loss=case_loss())
    x, y = data()
    callback = GradWatchCallback(every_n_steps=1, print_report=False, warn_on=None)
    history = model.fit(x[:256], y[:256], batch_size=64, epochs=2, verbose=2, callbacks=[callback])
    shown = capsys.readouterr().out
    assert "loss:" in shown and "gradwatch/" not in shown
    assert not [key for key in history.history if key.startswith("gradwatch/")] and callback.report.sampled_steps == 8


def _messages(caught: list[warnings.WarningMessage], text: str) -> list[str]:
    return [str(w.message) for w in caught if text in str(w.message)]


def test_a_second_callback_on_the_model_is_ignored_and_the_model_is_restored_exactly():
    """Both callbacks would wrap the same optimizer and layers; a user's own wrapper of ``call`` stays."""
    model = dense_stack("relu", 2)
    model.compile(optimizer=sgd(0.01), loss=case_loss())
    relu = model.layers[0]

    def own_call(*args, **kwargs):  # the user's instance attribute, over Dense.call
        return type(relu).call(relu, *args, **kwargs)

    relu.call = own_call
    wrapped = [(owner, name) for owner in (*model.layers, model.optimizer) for name in ("call", "apply", "_all_reduce_sum_gradients")]
    before = [vars(owner).get(name) for owner, name in wrapped]
    first, second = GradWatchCallback(print_report=False, warn_on=None), GradWatchCallback(print_report=False, warn_on=None)
    x, y = data()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x[:512], y[:512], batch_size=64, epochs=2, verbose=0, callbacks=[first, second])
    assert _messages(caught, "GradWatchCallback") == [
        "gradwatch: a second GradWatchCallback on this model is ignored (one callback per model measures a fit)"
    ]
    assert first.report.steps == 16 and first.report.layers[0]["history"]["grad_norm"][0] > 0 and second.report is None
    assert [vars(owner).get(name) for owner, name in wrapped] == before and relu.call is own_call
    model.fit(x[:512], y[:512], batch_size=64, epochs=1, verbose=0, callbacks=[second])  # the model is free again
    assert second.report.steps == 8 and [vars(owner).get(name) for owner, name in wrapped] == before


class _Interrupt(keras.callbacks.Callback):
    def on_train_batch_begin(self, batch, logs=None):
        if batch == 3:
            raise RuntimeError("interrupted")


def test_wrappers_left_by_an_interrupted_fit_are_removed_by_the_next_callback():
    """A fit that never reached on_train_end left its callback's wrappers: the next callback takes the model over."""
    model = dense_stack("relu", 2)
    model.compile(optimizer=sgd(0.01), loss=case_loss())
    x, y = data()
    stale = GradWatchCallback(every_n_steps=1, print_report=False)  # armed when the fit stopped
    with pytest.raises(RuntimeError, match="interrupted"):
        model.fit(x[:512], y[:512], batch_size=64, verbose=0, callbacks=[stale, _Interrupt()])
    assert "apply" in vars(model.optimizer)
    traced = []  # its recorder, were its wrapper still inside the next fit's step
    stale.collector._measure = lambda *args: traced.append(args)
    callback = GradWatchCallback(every_n_steps=1, print_report=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x[:512], y[:512], batch_size=64, verbose=0, callbacks=[callback])
    assert not _messages(caught, "gradwatch") and not traced and callback.report.sampled_steps == 8
    assert not [owner for owner in (*model.layers, model.optimizer) if {"call", "apply"} & set(vars(owner))]


def test_a_callback_listed_twice_counts_each_step_once():
    model = dense_stack("relu", 2, kernel_initializer="he_normal")
    model.compile(optimizer=sgd(0.01), loss=case_loss())
    callback = GradWatchCallback(every_n_steps=4, print_report=False)
    x, y = data()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x[:512], y[:512], batch_size=64, epochs=3, verbose=0, callbacks=[callback, callback], validation_data=(x[512:640], y[512:640]))
    assert _messages(caught, "gradwatch") == ["gradwatch: this GradWatchCallback is listed twice in fit's callbacks; its repeated calls are ignored"]
    report = callback.report
    assert report.steps == 24 and report.layers[0]["history"]["step"] == [0, 1, 2, 4, 8, 12, 16, 20] and not report.findings
    model.fit(x[:512], y[:512], batch_size=64, epochs=1, verbose=0, callbacks=[callback])  # listed once: every call counts
    assert callback.report.steps == 32 and "apply" not in vars(model.optimizer)


class Subclassed(keras.Model):
    def __init__(self, hidden: keras.layers.Layer) -> None:
        super().__init__()
        self.hidden, self.out = hidden, keras.layers.Dense(1)

    def call(self, x):  # type: ignore[no-untyped-def]
        return self.out(self.hidden(x))


@pytest.mark.parametrize("kind", ["sequential", "functional", "subclassed"])
def test_dead_units_come_from_the_training_batch_not_from_validation(kind):
    """Units dead on the training inputs but alive on the validation inputs, every step sampled."""
    keras.utils.set_random_seed(0)
    relu = keras.layers.Dense(8, activation="relu", kernel_initializer="ones", bias_initializer=keras.initializers.Constant(-6.0))
    if kind == "sequential":
        model = keras.Sequential([keras.Input((4,)), relu, keras.layers.Dense(1)])
    elif kind == "functional":
        inputs = keras.Input((4,))
        model = keras.Model(inputs, keras.layers.Dense(1)(relu(inputs)))
    else:
        model = Subclassed(relu)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    x, y = np.zeros((128, 4), "float32"), np.ones((128, 1), "float32")
    callback = GradWatchCallback(every_n_steps=1, print_report=False, warn_on=None)
    model.fit(x, y, batch_size=32, epochs=4, verbose=0, callbacks=[callback], validation_data=(x + 10.0, y))
    history = next(layer["history"] for layer in callback.report.layers if layer["name"] == relu.name)
    # shares over windows growing to 256 training rows (8 batches); validation rows would make the units alive
    built_by_fit = kind == "subclassed" and keras.backend.backend() == "tensorflow"  # measured from step 1
    assert history["dead_share"] == [1.0] * (15 if built_by_fit else 16)
    finding = callback.report.finding("dead_relu")
    assert finding.layers == (relu.name,) and finding.evidence["source"] == {relu.name: "activations"}


@pytest.mark.parametrize("initializer", ["zeros", "glorot_uniform"])
def test_units_that_start_as_copies_are_named(initializer):
    """Zero kernels under sigmoids: the first layer's units get equal gradients and stay copies (the second's
    diverge, fed by the output layer's random kernel)."""
    model = dense_stack("sigmoid", 2, kernel_initializer=initializer)
    finding = fit(model, sgd(0.05), epochs=1).finding("early_stagnation")
    copies = finding is not None and "unit_spread" in finding.evidence
    assert copies == (initializer == "zeros")
    if copies:
        assert finding.layers == (model.layers[0].name,) and finding.remedies[0].id == "random_init"


def test_state_dict_round_trip_continues_the_diagnosis():
    first = GradWatchCallback(print_report=False, warn_on=None)
    model = dense_stack("sigmoid", 10)
    fit(model, sgd(0.05), first)
    second = GradWatchCallback(print_report=False, warn_on=None)
    second.load_state_dict(json.loads(json.dumps(first.state_dict())))
    model.fit(*data(), batch_size=64, epochs=1, verbose=0, callbacks=[second])
    assert second.report.steps == 352
    assert second.report.finding("vanishing_gradients").first_step == first.report.finding("vanishing_gradients").first_step


def test_steps_per_execution_counts_every_optimizer_step():
    """One batch callback per 5 steps: steps are the optimizer's, samples are labelled with the step whose
    gradients they hold, and the update of one step, not measurable there, is left out (with a note)."""
    model = dense_stack("relu", 3)
    model.compile(sgd(0.01), "sparse_categorical_crossentropy", steps_per_execution=5)
    callback = GradWatchCallback(every_n_steps=10, print_report=False, warn_on=None)
    model.fit(*data(), batch_size=64, epochs=1, verbose=0, callbacks=[callback])
    report = callback.report
    assert report.steps == int(model.optimizer.iterations.numpy()) == 32
    history = report.layers[0]["history"]
    assert history["step"] == [4, 9, 14, 24, 31]  # the calls holding steps 0, 1, 2, 4 | 8 | 10 | 20 | 30 and "update_norm" not in history
    assert any("steps_per_execution=5" in note for note in report.notes)


class OwnTrainStep(keras.Model):
    """A custom ``train_step`` with its own loss metric, as in Keras' VAE and GAN examples."""

    def __init__(self, tracker_name: str | None) -> None:
        super().__init__()
        self.encoder, self.decoder = keras.layers.Dense(8, activation="relu"), keras.layers.Dense(16)
        self.tracker = keras.metrics.Mean(name=tracker_name) if tracker_name else None

    def call(self, x):
        return self.decoder(self.encoder(x))

    @property
    def metrics(self):
        return [self.tracker] if self.tracker else []

    def train_step(self, data):
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(self(data, training=True) - data))
        self.optimizer.apply_gradients(zip(tape.gradient(loss, self.trainable_weights), self.trainable_weights))
        if self.tracker:
            self.tracker.update_state(loss)
            return {self.tracker.name: self.tracker.result()}
        return {"mse": loss}  # a value, not a metric: nothing to read the loss from


@pytest.mark.parametrize("tracker_name", ["reconstruction_loss", None])
def test_a_custom_train_step_loss_is_read_from_its_own_metric(monkeypatch, tracker_name):
    if keras.backend.backend() != "tensorflow":
        pytest.skip("the model's train_step is written for TensorFlow")
    keras.utils.set_random_seed(0)
    model = OwnTrainStep(tracker_name)
    model.compile(keras.optimizers.Adam(1e-3))
    callback = GradWatchCallback(every_n_steps=4, print_report=False, warn_on=None)
    losses = []
    record = callback.session.record
    monkeypatch.setattr(callback.session, "record", lambda stats, **kw: losses.append(stats.loss) or record(stats, **kw))
    model.fit(np.random.default_rng(0).normal(size=(256, 16)).astype("float32"), epochs=1, batch_size=32, verbose=0, callbacks=[callback])
    notes = callback.report.notes
    if tracker_name:
        assert len(losses) == 3, "steps 1, 2, 4: fit builds the model in step 0"
        assert all(loss is not None and 0 < loss < 10 for loss in losses) and not any("loss" in note for note in notes)
    else:
        assert any("the loss was not measured" in note for note in notes)


def test_a_sampled_loss_is_the_mean_of_the_steps_since_the_previous_sample(monkeypatch):
    """As on every adapter: the loss of each step the sample covers, not the sampled batch's alone (a single
    batch is noisy); each epoch restarts Keras's loss tracker, and the mean with it."""
    model = dense_stack("relu", 2)
    model.compile(sgd(0.05), case_loss())
    callback = GradWatchCallback(every_n_steps=4, print_report=False, warn_on=None)
    sampled, running = [], []
    record = callback.session.record
    monkeypatch.setattr(callback.session, "record", lambda stats, **kw: sampled.append((stats.step, stats.loss)) or record(stats, **kw))
    logs = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: running.append((batch, logs["loss"])))
    model.fit(*data(), batch_size=64, epochs=2, verbose=0, callbacks=[callback, logs])
    per_step = [(i + 1) * mean - i * previous for (i, mean), (_, previous) in zip(running, [(0, 0.0), *running])]
    per_epoch = len(per_step) // 2
    steps = [step for step, _ in sampled]
    for (step, loss), previous in zip(sampled, [-1, *steps]):
        first = max(previous + 1, step // per_epoch * per_epoch)
        assert loss == pytest.approx(np.mean(per_step[first : step + 1]), rel=1e-4), (step, first)
    assert any(step - previous > 1 for step, previous in zip(steps, [-1, *steps]))


def test_every_steps_gradient_norm_reaches_the_next_sample_before_the_optimizer_clips_it(monkeypatch):
    """The forecast's ``gradient_climb`` needs every step's total norm: on TensorFlow and torch the step writes it
    into a ring on the device, the sample brings the steps since the previous one (before ``global_clipnorm``)."""
    applied = []

    class Recording(keras.optimizers.SGD):
        def apply(self, grads, trainable_variables=None):
            applied.append(float(np.sqrt(sum(np.sum(np.square(np.asarray(g))) for g in grads))))
            return super().apply(grads, trainable_variables)

    model = dense_stack("relu", 2)
    model.compile(Recording(0.05, global_clipnorm=1e-3), case_loss(), run_eagerly=True)
    callback = GradWatchCallback(every_n_steps=4, print_report=False, warn_on=None)
    sampled = []
    record = callback.session.record
    monkeypatch.setattr(callback.session, "record", lambda stats, **kw: sampled.append(stats) or record(stats, **kw))
    model.fit(*data(), batch_size=64, epochs=1, verbose=0, callbacks=[callback])
    norms = [norm for stats in sampled for norm in stats.step_grad_norms]
    assert len(norms) == sampled[-1].step + 1 and norms == pytest.approx(applied[: len(norms)], rel=1e-5)
    assert min(norms) > 100 * 1e-3, "read before the clip"


def _raise(*args, **kwargs):
    raise RuntimeError("injected fault")


FAULTS = {
    "keras collector": (KerasCollector, "read"),
    "keras gradient recorder": (KerasCollector, "_measure"),
    "keras per-step gradient norm": (KerasCollector, "_note_step_norm"),
    "detector vanishing_gradients": (VanishingGradients, "observe"),
    "JSON writer": (Report, "write_json"),
    "console report": (gradwatch.console, "build"),
}


@pytest.mark.parametrize("part", FAULTS)
def test_fault_in_each_part_warns_once_and_training_finishes(monkeypatch, tmp_path, part):
    monkeypatch.setattr(*FAULTS[part], _raise)
    callback = GradWatchCallback(summary_path=tmp_path / "gw.json")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(dense_stack("relu", 2), sgd(0.01), callback)
    faults = [str(w.message) for w in caught if "failed and is now disabled" in str(w.message)]
    assert faults == [f"gradwatch: {part} failed and is now disabled (RuntimeError: injected fault); training continues"]
    assert callback.report.steps == 320


def _run_on(backend: str, *scripts: str) -> list[str]:
    """Run ``scripts`` one after the other in a fresh interpreter on a Keras backend (Keras reads it once, at
    import); each prints one line last, and those lines are returned in order."""
    if backend != "tensorflow":
        pytest.importorskip(backend, reason=f"the {backend} backend is not installed")
    env = {**os.environ, "KERAS_BACKEND": backend}
    program = "\n".join(textwrap.dedent(script) for script in scripts)
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.splitlines()[-len(scripts) :]


VANISHING_SCRIPT = """
    import json
    from benchmarks.clinic.keras_cases import dense_stack, fit, sgd
    report = fit(dense_stack("sigmoid", 10), sgd(0.05), epochs=3)  # 96 steps: vanishing shows from the first samples
    finding = report.finding("vanishing_gradients")
    print(json.dumps([report.framework, finding.severity if finding else None]))
"""


SUBCLASSED_SCRIPT = """
    import json
    import keras
    import numpy as np
    from gradwatch.integrations.keras import GradWatchCallback

    class AutoEncoder(keras.Model):  # no weights until its first call: fit builds it
        def __init__(self):
            super().__init__()
            self.encoder, self.decoder = keras.layers.Dense(8, activation="relu"), keras.layers.Dense(16)

        def call(self, x):
            return self.decoder(self.encoder(x))

    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(512, 16)).astype("float32")
    model = AutoEncoder()
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    callback = GradWatchCallback(every_n_steps=4, print_report=False, strict=True)
    model.fit(x, x, batch_size=32, epochs=1, callbacks=[callback], verbose=0)
    report = callback.report
    print(json.dumps([report.sampled_steps, [layer["name"] for layer in report.layers], report.layers[0]["history"]["step"]]))
"""


APPLIED_GRADIENT_SCRIPT = """
    import json
    import keras
    import numpy as np
    from gradwatch.integrations.keras import GradWatchCallback

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(640, 8)).astype("float32"), rng.normal(size=(640, 1)).astype("float32")
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    callback = GradWatchCallback(every_n_steps=4, print_report=False, strict=True)
    norms, record = [], callback.session.record
    callback.session.record = lambda stats, **kw: norms.append((stats.step, stats.step_grad_norms)) or record(stats, **kw)
    for _ in range(2):  # 20 batches each: the second fit continues the schedule
        model.fit(x, y, batch_size=32, epochs=1, callbacks=[callback], verbose=0)
    print(json.dumps({"histories": [layer["history"] for layer in callback.report.layers], "step_norms": norms}))
"""


@pytest.mark.parametrize("backend", ["tensorflow", "torch", "jax"])
def test_every_backend_measures_the_step_the_optimizer_applied(backend):
    """One interpreter per backend runs three fits. A subclassed model, built by fit, is measured from its first
    sample. Plain SGD moves the weights by lr × gradient: a gradient from the wrong step, or none, breaks the
    equality. A deep sigmoid stack is named (TensorFlow's is tested in this process, above)."""
    scripts = (SUBCLASSED_SCRIPT, APPLIED_GRADIENT_SCRIPT) + ((VANISHING_SCRIPT,) if backend != "tensorflow" else ())
    subclassed, applied, *vanishing = (json.loads(line) for line in _run_on(backend, *scripts))
    sampled, layers, steps = subclassed
    assert len(layers) == 2 and sampled >= 5 and steps[-1] == 12  # steps 1, 2, 4, 8, 12 at least (0 may build it)
    for history in applied["histories"]:
        assert history["step"] == [0, 1, 2, 4, 8, 12, 16, 20, 24, 28, 32, 36]
        assert [0.1 * g for g in history["grad_norm"]] == pytest.approx(history["update_norm"], rel=1e-5)
    # every step's norm, the sampled one last; JAX's pure step cannot write them (not measured there)
    totals = [math.hypot(*grads) for grads in zip(*(history["grad_norm"] for history in applied["histories"]))]
    steps_between = [step - previous for (step, _), previous in zip(applied["step_norms"], [-1] + [s for s, _ in applied["step_norms"]])]
    if backend == "jax":
        assert all(not norms for _, norms in applied["step_norms"])
    else:
        assert [len(norms) for _, norms in applied["step_norms"]] == steps_between
        assert [norms[-1] for _, norms in applied["step_norms"]] == pytest.approx(totals, rel=1e-5)
    for framework, severity in vanishing:
        assert framework == f"keras/{backend}" and severity in ("warning", "critical")


MIRRORED_SCRIPT = """
import json
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
import numpy as np
from gradwatch.integrations.keras import GradWatchCallback

rng = np.random.default_rng(0)
x, y = rng.normal(size=(128, 12, 4)).astype("float32"), rng.normal(size=(128, 1)).astype("float32")

def run(strategy):
    with strategy.scope():
        keras.utils.set_random_seed(1)
        model = keras.Sequential([keras.Input((12, 4)), keras.layers.SimpleRNN(8),
                                  keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    callback = GradWatchCallback(every_n_steps=1, print_report=False, strict=True)
    model.fit(x, y, batch_size=32, epochs=1, callbacks=[callback], verbose=0, shuffle=False)
    return {"replicas": strategy.num_replicas_in_sync,
            "grad": [g for layer in callback.report.layers for g in layer["history"]["grad_norm"]],
            "update": [u for layer in callback.report.layers for u in layer["history"]["update_norm"]],
            "time": [t for profile in callback.session.history.time_profiles.values() for t in profile]}

print(json.dumps([run(tf.distribute.get_strategy()), run(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))]))
"""


def test_mirrored_strategy_reports_the_all_reduced_gradients():
    """Two replicas each see half the batch; gradwatch must report the summed gradient the optimizer applies."""
    single, mirrored = json.loads(_run_on("tensorflow", MIRRORED_SCRIPT)[0])
    assert (single["replicas"], mirrored["replicas"]) == (1, 2)
    assert len(mirrored["grad"]) == 3 * 4  # three layers, four steps
    assert mirrored["grad"] == pytest.approx(single["grad"], rel=1e-5)  # same data, same weights
    lr = 0.01  # plain SGD: update = lr * applied gradient
    assert [lr * g for g in mirrored["grad"]] == pytest.approx(mirrored["update"], rel=1e-4)
    assert len(mirrored["time"]) == 12 and mirrored["time"] == pytest.approx(single["time"], rel=1e-5)


def test_a_recorder_that_fails_after_good_samples_reports_no_stale_gradients(monkeypatch):
    """The second fit retraces the step and the recorder fails then: its variables still hold the first fit's norms."""
    model, callback = dense_stack("relu", 2), GradWatchCallback(print_report=False, warn_on=None)
    model.compile(optimizer=sgd(0.01), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = data()
    model.fit(x[:256], y[:256], batch_size=64, epochs=1, verbose=0, callbacks=[callback])
    monkeypatch.setattr(KerasCollector, "_measure", _raise)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(x[:256], y[:256], batch_size=64, epochs=2, verbose=0, callbacks=[callback])
    history = callback.report.layers[0]["history"]
    first_fit = history["step"].index(4)
    assert all(g is not None for g in history["grad_norm"][:first_fit])
    assert history["grad_norm"][first_fit:] == [None] * (len(history["step"]) - first_fit)


def test_unscaled_inputs_are_measured_and_standardising_comes_first():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 5000, (512, 4)).astype("float32")
    y = (x[:, 0] > 2500).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1, activation="sigmoid")])
    model.compile(keras.optimizers.SGD(0.1), "binary_crossentropy")
    callback = GradWatchCallback(print_report=False, warn_on=None)
    model.fit(x, y, epochs=3, batch_size=32, verbose=0, callbacks=[callback])
    mean_abs, std = callback.session.input_scale
    assert mean_abs == pytest.approx(float(np.abs(x).mean()), rel=0.15) and std == pytest.approx(float(x.std()), rel=0.15)
    assert callback.report.findings and all(f.remedies[0].id == "standardize_inputs" for f in callback.report.findings)
