"""Hugging Face Trainer programs of the mistakes clinic: a tiny GPT-2 built from a config (nothing downloaded).

Each program is ``program(callback)``: it builds the model, the dataset and a ``Trainer`` whose
callbacks are ``[callback]``; under gradwatch that is its ``GradWatchCallback``, under the oracle a
``TrainerCallback`` that runs ``mistakes_oracle.Recorder`` on the model and the Trainer's optimizer.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import transformers

from .mistakes_oracle import MistakeCase, Probe, Recorder, build_cases

VOCAB, LENGTH = 64, 16
Program = Callable[[Any], None]
TRAINER = "huggingface/transformers docs: Trainer quick tour (causal LM fine-tuning), GPT2Config/GPT2LMHeadModel"
FREEZE = "https://huggingface.co/docs/transformers/training (freezing all but the head by parameter name)"


class Copies(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    """Token sequences that repeat a random 4-token motif: learnable in a few dozen steps."""

    def __init__(self, size: int = 256, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, VOCAB, (size, 4), generator=gen).repeat(1, LENGTH // 4)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[index], "labels": self.ids[index]}


def gpt2(*, freeze: bool = False, schedule: str = "linear", steps: int = 200) -> Program:
    """A 2-layer GPT-2 (32 wide) trained by the Trainer, AdamW lr 3e-3, batch 16, ``schedule`` to 0 at the end.

    ``freeze``: train only the LM head, by name: ``requires_grad = "ln_f" in name or "lm_head" in name``;
    GPT-2 ties lm_head to the token embedding, so named_parameters() has no "lm_head" and only the
    final LayerNorm (64 of ~30k parameters) trains.
    """

    def program(callback: Any) -> None:
        torch.manual_seed(0)
        config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=LENGTH, n_embd=32, n_layer=2, n_head=2)
        model = transformers.GPT2LMHeadModel(config)
        if freeze:
            for name, param in model.named_parameters():
                param.requires_grad = "ln_f" in name or "lm_head" in name
        with tempfile.TemporaryDirectory() as out:
            args = transformers.TrainingArguments(
                output_dir=out,
                max_steps=steps,
                per_device_train_batch_size=16,
                learning_rate=3e-3,
                lr_scheduler_type=schedule,
                logging_steps=20,
                report_to=[],
                use_cpu=True,
                save_strategy="no",
                seed=0,
                disable_tqdm=True,
            )
            trainer = transformers.Trainer(model=model, args=args, train_dataset=Copies(), callbacks=[callback])
            trainer.train()

    return program


PROGRAMS: dict[str, Program] = {
    "hf_gpt2_frozen_by_name": gpt2(freeze=True),
    "hf_gpt2_linear_to_zero": gpt2(),
    "hf_gpt2_cosine_to_zero": gpt2(schedule="cosine"),
}


def gradwatch_run(program: Program) -> Callable[[], Any]:
    def run() -> Any:
        from gradwatch.integrations.transformers import GradWatchCallback

        torch.set_num_threads(1)
        callback = GradWatchCallback(print_report=False, warn_on=None)
        program(callback)
        return callback.report

    return run


class OracleCallback(transformers.TrainerCallback):
    """Runs ``Recorder`` on the Trainer's model and optimizer; the loss is the one the model returns."""

    def __init__(self) -> None:
        self.recorder: Recorder | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, optimizer: Any = None, **kwargs: Any) -> None:
        probe = Copies(64, seed=1).ids
        self.recorder = Recorder(model, optimizer, Probe(probe, probe, task="lm"))

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        assert self.recorder is not None
        self.recorder.step(None)


def oracle(program: Program) -> dict[str, Any]:
    torch.set_num_threads(1)
    callback = OracleCallback()
    program(callback)
    assert callback.recorder is not None
    callback.recorder.close()
    return callback.recorder.numbers()


# name -> (mistake, topic, words (None: the topic's), about, source, twin)
# fmt: off
LABELS: dict[str, tuple[str | None, str, tuple[str, ...] | None, str, str, str | None]] = {
    "hf_gpt2_frozen_by_name": ("frozen_model", "frozen_model", None, "requires_grad by name ('ln_f' or 'lm_head'); lm_head is tied, so only ln_f trains", f"{TRAINER}; {FREEZE}", "hf_gpt2_linear_to_zero"),
    "hf_gpt2_linear_to_zero": (None, "lr_schedule_collapse", None, "the Trainer's default linear schedule: lr reaches 0 at the last step", TRAINER, "hf_gpt2_frozen_by_name"),
    "hf_gpt2_cosine_to_zero": (None, "lr_schedule_collapse", None, "lr_scheduler_type='cosine': lr reaches 0 at the last step", TRAINER, None),
}
# fmt: on
SLOW = {"hf_gpt2_frozen_by_name", "hf_gpt2_linear_to_zero"}  # ~3 s each; the cosine twin covers the adapter

# fmt: off
ORACLE: dict[str, dict[str, Any]] = {
    'hf_gpt2_frozen_by_name': {'steps': 200, 'loss0': 3.92, 'loss_end': 3.9, 'chance': 4.16, 'metric_end': None, 'trainable_share': 0.00228, 'loss_end/loss0': 0.995},
    'hf_gpt2_linear_to_zero': {'steps': 200, 'loss0': 3.92, 'loss_end': 1.97, 'chance': 4.16, 'metric_end': None, 'lr_end/lr0': 0.005, 'lr_low_share': 0.0, 'lr_returns': 0},
    'hf_gpt2_cosine_to_zero': {'steps': 200, 'loss0': 3.92, 'loss_end': 2.02, 'chance': 4.16, 'metric_end': None, 'lr_end/lr0': 6.17e-05, 'lr_low_share': 0.02, 'lr_returns': 0},
}
# fmt: on


CASES: list[MistakeCase] = build_cases(
    "transformers", LABELS, ORACLE, SLOW, lambda name: (gradwatch_run(PROGRAMS[name]), partial(oracle, PROGRAMS[name]))
)
