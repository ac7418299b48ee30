"""The Hugging Face Trainer callback on a tiny randomly initialised GPT-2 (built from a config, nothing downloaded)."""

from __future__ import annotations

import json

import pytest

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

import jsonschema

from gradwatch import GradWatchWarning
from gradwatch.detectors import Detector, default_detectors
from gradwatch.integrations.transformers import GradWatchCallback
from gradwatch.summary_check import schema_path

VOCAB, LENGTH = 64, 16
ABSURD_LR = 30.0


class Copies(torch.utils.data.Dataset):
    """Token sequences that repeat a short random motif: learnable in a few dozen steps."""

    def __init__(self, size: int = 256, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        motifs = torch.randint(0, VOCAB, (size, 4), generator=gen)
        self.ids = motifs.repeat(1, LENGTH // 4)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[index], "labels": self.ids[index]}


def tiny_gpt2(seed: int = 0, **config: object) -> transformers.GPT2LMHeadModel:
    torch.manual_seed(seed)
    options = {"vocab_size": VOCAB, "n_positions": LENGTH, "n_embd": 32, "n_layer": 2, "n_head": 2, **config}
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(**options))


class Recorder(transformers.TrainerCallback):
    """Stands in for a logger callback (TensorBoard, W&B): keeps what on_log hands it."""

    def __init__(self) -> None:
        self.logs: list[dict] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append(dict(logs or {}))


def train(tmp_path, callback, *, steps=40, lr=1e-3, max_grad_norm=1.0, logging_steps=10, before=(), model=None, **options):
    torch.set_num_threads(1)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"),
        max_steps=steps,
        per_device_train_batch_size=16,
        learning_rate=lr,
        max_grad_norm=max_grad_norm,
        logging_steps=logging_steps,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        seed=0,
        **{"lr_scheduler_type": "constant", "disable_tqdm": True, **options},
    )
    trainer = transformers.Trainer(model=model or tiny_gpt2(), args=args, train_dataset=Copies(), callbacks=[*before, callback])
    trainer.train()
    assert callback.session.report() is callback.report, "one way to the report on every adapter"
    return trainer, callback.report


def test_healthy_fine_tune_is_silent_and_logs_gradwatch_scalars(tmp_path):
    callback, recorder = GradWatchCallback(summary_path=tmp_path / "gw.json", print_report=False), Recorder()
    trainer, report = train(tmp_path, callback, before=[recorder])
    assert report.findings == [], [(f.symptom, f.message) for f in report.findings]
    summary = json.loads((tmp_path / "gw.json").read_text())
    jsonschema.validate(summary, json.loads(schema_path().read_text()))
    assert summary["framework"] == "transformers" and summary["steps"] == 40
    assert report.every_n_steps == 10, "follows the Trainer's logging_steps"
    steps = report.layers[0]["history"]["step"]
    assert steps == [1, 2, 4, 8, 10, 20, 30, 40], "sampled steps are the Trainer's 1-based global steps"
    logged = [entry for entry in trainer.state.log_history if "gradwatch/grad_norm" in entry]
    assert [entry["step"] for entry in logged] == [10, 20, 30, 40]
    assert [entry for entry in recorder.logs if "gradwatch/grad_norm" in entry] == [
        {k: v for k, v in entry.items() if k != "step"} for entry in logged
    ], "a logger callback listed before gradwatch still receives its scalars"
    assert any(entry["grad_norm"] > 1.0 for entry in logged), "clipping at 1.0 bit on some logged step"
    assert any("pre-clip (rescaled with the Trainer's grad_norm)" in note for note in report.notes)
    for entry in logged:  # clipped or not, gradwatch reports the pre-clip norm on the steps the Trainer logs
        assert entry["gradwatch/grad_norm"] == pytest.approx(entry["grad_norm"], rel=1e-4)
    facts = report.facts
    assert facts.residual is True and facts.grad_clipping is True
    assert "GELU" in facts.activation_counts() and "transformer.ln_f" in facts.normalization


def test_absurd_learning_rate_without_clipping_reports_exploding_or_nonfinite(tmp_path):
    callback = GradWatchCallback(print_report=False, every_n_steps=2)
    with pytest.warns(GradWatchWarning, match="exploding_gradients|nonfinite"):
        _, report = train(tmp_path, callback, lr=ABSURD_LR, max_grad_norm=0.0, steps=30, logging_steps=5, optim="sgd")
    symptoms = {f.symptom for f in report.findings}
    assert symptoms & {"exploding_gradients", "nonfinite"}, symptoms


def test_untied_embedding_with_mostly_unused_rows_is_not_a_vanishing_gradient(tmp_path):
    """Only the rows of tokens in the batch get gradient: 64 of 20,000 here, and that is not vanishing."""
    model = tiny_gpt2(vocab_size=20_000, tie_word_embeddings=False)
    callback = GradWatchCallback(print_report=False, every_n_steps=5)
    _, report = train(tmp_path, callback, model=model, steps=40)
    assert report.layers[0]["name"] == "transformer.wte" and report.layers[-1]["name"] == "lm_head"
    assert report.findings == [], [(f.symptom, f.message) for f in report.findings]


def test_gradient_accumulation_counts_optimizer_steps(tmp_path):
    callback = GradWatchCallback(print_report=False, every_n_steps=5)
    trainer, report = train(tmp_path, callback, steps=20, gradient_accumulation_steps=2)
    assert trainer.state.global_step == report.steps == 20
    assert report.layers[0]["history"]["step"] == [1, 2, 4, 5, 10, 15, 20]
    assert report.findings == [], [(f.symptom, f.message) for f in report.findings]


class Probe(Detector):
    """Records the learning rate and loss of every sample it is shown; never finds anything."""

    symptom = "probe"

    def __init__(self) -> None:
        self.seen: dict[int, tuple[float | None, float | None]] = {}

    def observe(self, sample, facts):
        self.seen[sample.step] = (sample.lr, sample.loss)


def test_learning_rate_from_the_scheduler_and_loss_from_the_trainer(tmp_path):
    probe = Probe()
    callback = GradWatchCallback(print_report=False, detectors=[*default_detectors(), probe])
    trainer, _ = train(tmp_path, callback, steps=40, lr_scheduler_type="linear", warmup_steps=10)
    assert sorted(probe.seen) == [1, 2, 4, 8, 10, 20, 30, 40]
    assert [probe.seen[s][0] for s in (1, 2, 4, 8)] == pytest.approx([0.0, 1e-4, 3e-4, 7e-4]), "the LR each step used (warmup)"
    for entry in trainer.state.log_history:
        if "loss" in entry and entry["step"] > 10:  # the Trainer's logging window = the steps since the previous sample
            lr, loss = probe.seen[entry["step"]]
            assert lr == pytest.approx(entry["learning_rate"]) and loss == pytest.approx(entry["loss"], rel=1e-4)


class StepNorms(Probe):
    """Records the per-step gradient norms each sample brings."""

    def observe(self, sample, facts):
        self.seen[sample.step] = sample.step_grad_norms


def test_every_steps_gradient_norm_is_read_before_the_trainer_clips_it(tmp_path):
    probe = StepNorms()
    callback = GradWatchCallback(print_report=False, every_n_steps=4, detectors=[*default_detectors(), probe])
    trainer, _ = train(tmp_path, callback, steps=12, max_grad_norm=1e-3, logging_steps=1, gradient_accumulation_steps=2)
    logged = [entry["grad_norm"] for entry in trainer.state.log_history if "grad_norm" in entry]  # the Trainer's pre-clip norms
    read = [norm for step in sorted(probe.seen) for norm in probe.seen[step]]
    assert len(read) == len(logged) == 12
    assert read == pytest.approx(logged, rel=1e-4)


def test_the_report_starts_on_a_line_of_its_own_below_the_progress_bar(tmp_path, capfd):
    """The Trainer's tqdm bar has no newline until it closes, after gradwatch has printed."""
    train(tmp_path, GradWatchCallback(), steps=4, disable_tqdm=False)
    err = capfd.readouterr().err
    bar, report = err.index("4/4 ["), err.index("╭─ gradwatch")
    assert bar < report and "\n" in err[bar:report]
