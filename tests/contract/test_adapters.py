"""The behaviour every adapter owes its users, judged the same way for each: the same tiny model, the same data,
a healthy run and a diverging one, through ``watch()``, Lightning, the Hugging Face Trainer and Keras.

A new adapter adds one ``Driver`` here and is held to every test from its first line.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest

from gradwatch import Report
from gradwatch.options import Framework
from gradwatch.summary_check import schema_path

torch = pytest.importorskip("torch")

FEATURES, HIDDEN, CLASSES, ROWS, BATCH = 8, 16, 2, 256, 32
HEALTHY_LR, DIVERGING_LR = 0.05, 1e7
STEPS, EVERY = 32, 5  # 4 epochs of 8 batches


def data() -> tuple[np.ndarray, np.ndarray]:
    """A learnable two-class task: the sign of the first two features' sum."""
    x = np.random.default_rng(0).normal(size=(ROWS, FEATURES)).astype(np.float32)
    return x, (x[:, 0] + x[:, 1] > 0).astype(np.int64)


def torch_model() -> Any:
    torch.manual_seed(0)
    nn = torch.nn
    return nn.Sequential(nn.Linear(FEATURES, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, CLASSES))


def batches() -> list[tuple[Any, Any]]:
    x, y = data()
    return [(torch.from_numpy(x[i : i + BATCH]), torch.from_numpy(y[i : i + BATCH])) for i in range(0, ROWS, BATCH)]


# Each driver trains the model for STEPS optimizer steps at ``lr`` with gradwatch's options and returns its report
# and the number of steps that ran.
Driver = Callable[[float, dict[str, Any]], tuple[Report, int]]


def run_pytorch(lr: float, options: dict[str, Any]) -> tuple[Report, int]:
    from gradwatch.integrations.pytorch import watch

    model = torch_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    loader, steps = batches(), 0
    with watch(model, optimizer, **options) as watcher:
        while steps < STEPS and not watcher.should_stop:
            x, y = loader[steps % len(loader)]
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            watcher.step(loss)
            steps += 1
    return watcher.report(), steps


def run_lightning(lr: float, options: dict[str, Any]) -> tuple[Report, int]:
    lightning = pytest.importorskip("lightning")
    from gradwatch.integrations.lightning import GradWatchCallback

    class Classifier(lightning.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = torch_model()

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            x, y = batch
            return torch.nn.functional.cross_entropy(self.model(x), y)

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=lr)

    callback = GradWatchCallback(**options)
    trainer = lightning.Trainer(
        max_steps=STEPS, callbacks=[callback], logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu", devices=1,
    )  # fmt: skip
    x, y = data()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=BATCH)
    trainer.fit(Classifier(), train_dataloaders=loader)
    return callback.session.report(), trainer.global_step


def run_transformers(lr: float, options: dict[str, Any], tmp: Path) -> tuple[Report, int]:
    transformers = pytest.importorskip("transformers")
    from gradwatch.integrations.transformers import GradWatchCallback

    class Classifier(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = torch_model()

        def forward(self, x: Any, labels: Any = None) -> dict[str, Any]:
            logits = self.model(x)
            return {"loss": torch.nn.functional.cross_entropy(logits, labels), "logits": logits}

    x, y = data()
    rows = [{"x": torch.from_numpy(x[i]), "labels": torch.tensor(y[i])} for i in range(ROWS)]
    model = Classifier()
    args = transformers.TrainingArguments(
        output_dir=str(tmp / "out"), max_steps=STEPS, per_device_train_batch_size=BATCH, learning_rate=lr, logging_steps=EVERY,
        report_to=[], save_strategy="no", disable_tqdm=True, use_cpu=True, max_grad_norm=0.0, seed=0,
    )  # fmt: skip
    callback = GradWatchCallback(**options)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=rows, callbacks=[callback], optimizers=(optimizer, None))
    trainer.train()
    return callback.session.report(), trainer.state.global_step


def run_keras(lr: float, options: dict[str, Any]) -> tuple[Report, int]:
    keras = pytest.importorskip("keras")
    from gradwatch.integrations.keras import GradWatchCallback

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(HIDDEN, activation="relu"),
            keras.layers.Dense(HIDDEN, activation="relu"),
            keras.layers.Dense(CLASSES),
        ]
    )
    model.compile(optimizer=keras.optimizers.SGD(lr), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    callback = GradWatchCallback(**options)
    x, y = data()
    epochs = STEPS // (ROWS // BATCH)
    history = model.fit(x, y, batch_size=BATCH, epochs=epochs, steps_per_epoch=ROWS // BATCH, callbacks=[callback], verbose=0, shuffle=False)
    del history
    return callback.session.report(), callback.step


ADAPTERS = [Framework.PYTORCH, Framework.LIGHTNING, Framework.TRANSFORMERS, Framework.KERAS]


def train(framework: Framework, lr: float, tmp_path: Path, **options: Any) -> tuple[Report, int]:
    options = {"every_n_steps": EVERY, "warn_on": None, "print_report": False, **options}
    if framework is Framework.TRANSFORMERS:
        return run_transformers(lr, options, tmp_path)
    return {Framework.PYTORCH: run_pytorch, Framework.LIGHTNING: run_lightning, Framework.KERAS: run_keras}[framework](lr, options)


@pytest.mark.parametrize("framework", ADAPTERS, ids=str)
def test_a_healthy_run_is_measured_on_schedule_named_as_its_framework_and_found_clean(framework, tmp_path, capfd):
    summary = tmp_path / "gw.json"
    report, steps = train(framework, HEALTHY_LR, tmp_path, summary_path=summary, print_report=True)
    assert capfd.readouterr().err.count("gradwatch ·") == 1, "the report, printed once at the end"
    assert steps == STEPS and Framework.of(report.framework) is framework
    assert [f.symptom for f in report.findings if f.at_least("warning")] == []
    assert report.sampled_steps is not None and report.sampled_steps >= 7  # 1, 2, 4, then every 5th of 32 steps
    weighted = [layer for layer in report.layers if layer["history"].get("grad_norm")]
    assert len(weighted) == 3, "the three weighted layers, each measured"
    written = json.loads(summary.read_text())
    jsonschema.validate(written, json.loads(schema_path().read_text()))
    assert written["steps"] == report.steps and not report.too_little_measured


@pytest.mark.parametrize("framework", ADAPTERS, ids=str)
def test_a_diverging_run_is_named_critical_and_stop_on_ends_it_early(framework, tmp_path, capfd):
    report, steps = train(framework, DIVERGING_LR, tmp_path, stop_on="critical")
    assert "gradwatch ·" not in capfd.readouterr().err, "print_report=False prints no report"
    critical = [f.symptom for f in report.findings if f.severity == "critical"]
    assert critical and set(critical) <= {"nonfinite", "exploding_gradients"}, [(f.symptom, f.severity) for f in report.findings]
    assert steps < STEPS, "stop_on='critical' ended training before its last step"
