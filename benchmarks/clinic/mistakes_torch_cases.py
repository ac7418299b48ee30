"""The PyTorch cases of the mistakes clinic: labels, sources and the oracle's numbers for ``mistakes_torch``'s programs."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import nn

from .mistakes_oracle import MistakeCase, Probe, build_cases, torch_oracle
from .mistakes_torch import D2L, PROGRAMS, TUTORIALS, gradwatch_run, optimization_tutorial

# -- a watcher never closed: a script that ends without close() ------------------------------------------


def watched_script(summary: str, close: bool) -> None:
    """The optimization-tutorial program as a script under ``watch(..., summary_path=summary)``; closed or not."""
    from gradwatch.integrations.pytorch import watch

    torch.set_num_threads(1)
    watchers: list[Any] = []

    def attach(model: nn.Module, optimizer: torch.optim.Optimizer | None, probe: Probe | None) -> Any:
        watchers.append(watch(model, optimizer, summary_path=summary, warn_on=None))
        return watchers[-1]

    optimization_tutorial(attach)
    if close:
        watchers[0].close()


def script_run(close: bool) -> Callable[[], Any]:
    """``run`` for the script: a subprocess that exits on its own; its summary, read back (None if none was written)."""

    def run() -> Any:
        import os
        import subprocess
        import sys
        import tempfile
        from pathlib import Path

        from gradwatch import load_summary

        root = str(Path(__file__).resolve().parents[2])
        path = os.pathsep.join([p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p] + [root])
        with tempfile.TemporaryDirectory() as folder:
            summary = Path(folder) / "gradwatch.json"
            code = f"from benchmarks.clinic.mistakes_torch_cases import watched_script; watched_script({str(summary)!r}, {close})"
            env = {**os.environ, "PYTHONPATH": path}
            done = subprocess.run([sys.executable, "-c", code], cwd=folder, env=env, capture_output=True, text=True, timeout=120)
            if done.returncode != 0:
                raise RuntimeError(f"the script failed: {done.stderr[-500:]}")
            return load_summary(summary) if summary.exists() else None

    return run


def script_oracle(close: bool) -> Callable[[], dict[str, Any]]:
    def measure() -> dict[str, Any]:
        return {**torch_oracle(optimization_tutorial), "closed": close}

    return measure


BASICS = TUTORIALS + "basics/optimization_tutorial.py"
ZERO_GRAD = "https://flisks.com/python-why-do-we-need-to-call-zero-grad-in-pytorch (why zero_grad is needed)"
SOFTMAX = "https://runebook.dev/en/docs/pytorch/generated/torch.nn.softmax (Softmax before CrossEntropyLoss / NLLLoss)"
SCHEDULER = "https://runebook.dev/en/docs/pytorch/generated/torch.optim.lr_scheduler.lrscheduler (StepLR stepped per batch)"
# name -> (mistake, topic, words (None: the topic's), about, source, twin)
# fmt: off
LABELS: dict[str, tuple[str | None, str, tuple[str, ...] | None, str, str, str | None]] = {
    "pt_zero_grad_forgotten": ("gradients_not_cleared", "gradients_not_cleared", None, "train_loop without optimizer.zero_grad(); SGD 0.1", f"{BASICS}; {ZERO_GRAD}", "pt_zero_grad"),
    "pt_zero_grad": (None, "gradients_not_cleared", None, "the tutorial's train_loop: step, then zero_grad", BASICS, "pt_zero_grad_forgotten"),
    "pt_grad_accumulation": (None, "gradients_not_cleared", None, "intended accumulation: 4 backwards (loss / 4), then step and zero_grad", BASICS, "pt_zero_grad_forgotten"),
    "pt_float64": (None, "precision", None, "model.double() and float64 inputs, otherwise pt_zero_grad", BASICS, None),
    "pt_bfloat16": (None, "precision", None, "bfloat16 parameters and inputs on CPU, otherwise pt_zero_grad", BASICS, None),
    "pt_softmax_into_ce": ("output_loss_mismatch", "output_loss_mismatch", ("softmax",), "nn.Softmax(dim=1) as the last module, then nn.CrossEntropyLoss", f"{D2L}chapter_linear-classification/softmax-regression-concise.md; {SOFTMAX}", "pt_logits_into_ce"),
    "pt_relu_into_ce": ("output_loss_mismatch", "output_loss_mismatch", ("relu",), "a ReLU after the output Linear, then nn.CrossEntropyLoss", f"{TUTORIALS}nn_tutorial.py (ReLU on the class scores)", "pt_logits_into_ce"),
    "pt_softmax_into_nll": ("output_loss_mismatch", "output_loss_mismatch", ("softmax", "log_softmax", "log-prob*", "log prob*"), "a model ending in nn.Softmax under F.nll_loss (the loss goes negative)", f"Lightning-AI/tutorials mnist-hello-world (log_softmax + nll_loss); {SOFTMAX}", "pt_log_softmax_into_nll"),
    "pt_logits_into_ce": (None, "output_loss_mismatch", None, "raw logits into CrossEntropyLoss", f"{D2L}chapter_linear-classification/softmax-regression-concise.md", "pt_softmax_into_ce"),
    "pt_log_softmax_into_nll": (None, "output_loss_mismatch", None, "a model ending in nn.LogSoftmax under F.nll_loss", "Lightning-AI/tutorials mnist-hello-world (log_softmax + nll_loss)", "pt_softmax_into_nll"),
    "pt_sigmoid_into_bce_logits": ("output_loss_mismatch", "output_loss_mismatch", ("sigmoid",), "torch.sigmoid in forward, then nn.BCEWithLogitsLoss (sigmoid twice)", "https://pytorch.org/docs/stable/generated/torch.nn.BCEWithLogitsLoss.html (takes logits)", "pt_bce_logits"),
    "pt_bce_logits": (None, "output_loss_mismatch", None, "logits into nn.BCEWithLogitsLoss, breast-cancer table", "https://pytorch.org/docs/stable/generated/torch.nn.BCEWithLogitsLoss.html", "pt_sigmoid_into_bce_logits"),
    "pt_mse_broadcast": ("loss_broadcast", "loss_broadcast", None, "MSELoss(outputs [N, 1], targets [N]): an [N, N] loss, the model learns the mean", "https://pytorch.org/docs/stable/generated/torch.nn.MSELoss.html (input and target of the same shape; the 'target size different to the input size' warning)", "pt_mse_shapes_match"),
    "pt_mse_shapes_match": (None, "loss_broadcast", None, "MSELoss(outputs [N, 1], targets [N, 1]), diabetes table", "https://pytorch.org/docs/stable/generated/torch.nn.MSELoss.html", "pt_mse_broadcast"),
    "pt_eval_after_validation": ("eval_mode_training", "eval_mode_training", None, "test_loop sets model.eval(); train() is called once, before epoch 1 (BatchNorm + Dropout)", BASICS, "pt_train_eval_each_epoch"),
    "pt_eval_before_training": ("eval_mode_training", "eval_mode_training", None, "model.eval() once before training, never train()", BASICS, "pt_train_eval_each_epoch"),
    "pt_train_eval_each_epoch": (None, "eval_mode_training", None, "train() in train_loop, eval() in test_loop, every epoch", BASICS, "pt_eval_after_validation"),
    "pt_head_after_optimizer": ("params_not_in_optimizer", "params_not_in_optimizer", None, "optimizer built, then model.fc replaced: the new head is in no param group", f"{D2L}chapter_computer-vision/fine-tuning.md (replace fc, then the optimizer)", "pt_head_then_optimizer"),
    "pt_frozen_with_head": ("frozen_model", "frozen_model", None, "every nn.Linear frozen to keep the features, the new head too: 2.8% of the parameters (BatchNorm) train", f"{D2L}chapter_computer-vision/fine-tuning.md", "pt_head_then_optimizer"),
    "pt_head_then_optimizer": (None, "params_not_in_optimizer", None, "model.fc replaced, then the optimizer over all parameters", f"{D2L}chapter_computer-vision/fine-tuning.md", "pt_head_after_optimizer"),
    "pt_steplr_per_batch": ("lr_schedule_collapse", "lr_schedule_collapse", None, "StepLR(step_size=5, gamma=0.1) stepped every batch: lr 1e-7 x lr0 after 35 steps", f"{TUTORIALS}transfer_learning_tutorial.py (StepLR per epoch); {SCHEDULER}", "pt_steplr_per_epoch"),
    "pt_exponential_per_batch": ("lr_schedule_collapse", "lr_schedule_collapse", None, "ExponentialLR(gamma=0.9) stepped every batch", SCHEDULER, "pt_steplr_per_epoch"),
    "pt_steplr_per_epoch": (None, "lr_schedule_collapse", None, "StepLR(step_size=5, gamma=0.1) stepped every epoch", f"{TUTORIALS}transfer_learning_tutorial.py", "pt_steplr_per_batch"),
    "pt_cosine_epochs_per_batch": ("lr_schedule_collapse", "lr_schedule_collapse", None, "CosineAnnealingLR(T_max=10) for 10 epochs, stepped every batch: 0 and back every 20 steps", f"{TUTORIALS}transfer_learning_tutorial.py; https://pytorch.org/docs/stable/generated/torch.optim.lr_scheduler.CosineAnnealingLR.html", "pt_cosine_to_zero"),
    "pt_cosine_to_zero": (None, "lr_schedule_collapse", None, "CosineAnnealingLR over the whole run, stepped per batch: lr reaches 0 at the very end", "https://pytorch.org/docs/stable/generated/torch.optim.lr_scheduler.CosineAnnealingLR.html", "pt_steplr_per_batch"),
    "pt_labels_shuffled_apart": ("chance_level_loss", "chance_level_loss", None, "x = x[perm] but y = y[torch.randperm(n)]: labels no longer belong to the images", BASICS, "pt_shuffled_together"),
    "pt_shuffled_together": (None, "chance_level_loss", None, "one permutation for inputs and labels", BASICS, "pt_labels_shuffled_apart"),
    "pt_view_not_permute": ("chance_level_loss", "chance_level_loss", None, "rows.view(8, B, 8) for a sequence-first GRU where permute(1, 0, 2) was meant: rows of several images per sequence", "yunjey/pytorch-tutorial tutorials/02-intermediate/recurrent_neural_network/main.py; https://discuss.pytorch.org/t/lstm-change-batch-first-true-loss-does-not-decrease/62364", "pt_permute"),
    "pt_permute": (None, "chance_level_loss", None, "rows.permute(1, 0, 2) for a sequence-first GRU", "yunjey/pytorch-tutorial tutorials/02-intermediate/recurrent_neural_network/main.py", "pt_view_not_permute"),
    "pt_sum_loss_sgd": ("summed_loss", "summed_loss", None, "CrossEntropyLoss(reduction='sum') over batches of 256 under plain SGD(0.1)", "https://pytorch.org/docs/stable/generated/torch.nn.CrossEntropyLoss.html (reduction); " + BASICS, "pt_mean_loss_sgd"),
    "pt_mean_loss_sgd": (None, "summed_loss", None, "the mean over batches of 256 under SGD(0.1)", BASICS, "pt_sum_loss_sgd"),
    "pt_init_std1": ("init_scale", "init_scale", None, "8-layer ReLU MLP, nn.init.normal_(w, std=1.0) (x11 the He scale per layer), Adam", f"{D2L}chapter_multilayer-perceptrons/numerical-stability-and-init.md", "pt_init_he"),
    "pt_init_std0001": ("init_scale", "init_scale", None, "the same with std=0.001: the output is ~0 and the loss stays at ln 10", f"{D2L}chapter_multilayer-perceptrons/numerical-stability-and-init.md", "pt_init_he"),
    "pt_init_he": (None, "init_scale", None, "the same with He (kaiming_normal_) init", f"{D2L}chapter_multilayer-perceptrons/numerical-stability-and-init.md", "pt_init_std1"),
    "pt_watch_not_closed": ("unclosed_watcher", "unclosed_watcher", None, "a script that watch()es the tutorial run and exits without close(), outside any with-block", BASICS, "pt_watch_closed"),
    "pt_watch_closed": (None, "unclosed_watcher", None, "the same script, watcher.close() at the end", BASICS, "pt_watch_not_closed"),
}
# fmt: on
SLOW = {"pt_watch_not_closed", "pt_watch_closed"}  # over ~3 s on one core (a fresh interpreter each)

# fmt: off
ORACLE: dict[str, dict[str, Any]] = {
    'pt_zero_grad_forgotten': {'steps': 192, 'loss0': 2.28, 'loss_end': 3.05, 'chance': 2.3, 'metric_end': 0.0909, 'stale_share': 0.995, 'backwards_per_step': 1.0, 'grad_growth': 65.8, 'loss_max/loss0': 1.72},
    'pt_zero_grad': {'steps': 192, 'loss0': 2.28, 'loss_end': 0.481, 'chance': 2.3, 'metric_end': 0.832, 'stale_share': 0.0, 'backwards_per_step': 1.0, 'grad_growth': 3.97, 'loss_max/loss0': 1.02},
    'pt_grad_accumulation': {'steps': 752, 'loss0': 2.28, 'loss_end': 0.487, 'chance': 2.3, 'metric_end': 0.828, 'stale_share': 0.0, 'backwards_per_step': 4.0, 'grad_growth': 3.52, 'loss_max/loss0': 1.03},
    'pt_float64': {'steps': 192, 'loss0': 2.28, 'loss_end': 0.481, 'chance': 2.3, 'metric_end': 0.832, 'dtype': 'float64', 'loss_end/loss0': 0.211},
    'pt_bfloat16': {'steps': 192, 'loss0': 2.28, 'loss_end': 0.5, 'chance': 2.3, 'metric_end': 0.825, 'dtype': 'bfloat16', 'loss_end/loss0': 0.219},
    'pt_softmax_into_ce': {'steps': 192, 'loss0': 2.3, 'loss_end': 1.6, 'chance': 2.3, 'metric_end': 0.811, 'out_kind': 'probs', 'expects': 'logits'},
    'pt_relu_into_ce': {'steps': 192, 'loss0': 2.31, 'loss_end': 1.18, 'chance': 2.3, 'metric_end': 0.451, 'out_kind': 'nonneg', 'expects': 'logits'},
    'pt_softmax_into_nll': {'steps': 192, 'loss0': -0.1, 'loss_end': -0.828, 'chance': 2.3, 'metric_end': 0.798, 'out_kind': 'probs', 'expects': 'log_probs'},
    'pt_logits_into_ce': {'steps': 192, 'loss0': 2.31, 'loss_end': 0.0484, 'chance': 2.3, 'metric_end': 0.902, 'out_kind': 'logits', 'expects': 'logits'},
    'pt_log_softmax_into_nll': {'steps': 192, 'loss0': 2.31, 'loss_end': 0.0484, 'chance': 2.3, 'metric_end': 0.902, 'out_kind': 'log_probs', 'expects': 'log_probs'},
    'pt_sigmoid_into_bce_logits': {'steps': 260, 'loss0': 0.661, 'loss_end': 0.461, 'chance': 0.66, 'metric_end': 0.953, 'out_kind': 'probs', 'expects': 'logits'},
    'pt_bce_logits': {'steps': 260, 'loss0': 0.748, 'loss_end': 0.0156, 'chance': 0.66, 'metric_end': 0.964, 'out_kind': 'logits', 'expects': 'logits'},
    'pt_mse_broadcast': {'steps': 180, 'loss0': 1.09, 'loss_end': 1.04, 'chance': 1.09, 'metric_end': 0.0213, 'shapes': '[92, 1] vs [92]'},
    'pt_mse_shapes_match': {'steps': 180, 'loss0': 1.09, 'loss_end': 0.362, 'chance': 1.09, 'metric_end': 0.537, 'shapes': '[92, 1] vs [92, 1]'},
    'pt_eval_after_validation': {'steps': 192, 'loss0': 2.34, 'loss_end': 0.155, 'chance': 2.3, 'metric_end': 0.862, 'eval_share': 0.875},
    'pt_eval_before_training': {'steps': 192, 'loss0': 2.31, 'loss_end': 0.297, 'chance': 2.3, 'metric_end': 0.852, 'eval_share': 1.0},
    'pt_train_eval_each_epoch': {'steps': 192, 'loss0': 2.34, 'loss_end': 0.184, 'chance': 2.3, 'metric_end': 0.912, 'eval_share': 0.0},
    'pt_head_after_optimizer': {'steps': 192, 'loss0': 2.46, 'loss_end': 0.172, 'chance': 2.3, 'metric_end': 0.906, 'orphan_share': 0.0705, 'orphan_moved': 0.0},
    'pt_frozen_with_head': {'steps': 192, 'loss0': 2.46, 'loss_end': 1.84, 'chance': 2.3, 'metric_end': 0.364, 'trainable_share': 0.0277, 'loss_end/loss0': 0.75},
    'pt_head_then_optimizer': {'steps': 192, 'loss0': 2.46, 'loss_end': 0.0111, 'chance': 2.3, 'metric_end': 0.886, 'orphan_share': 0.0, 'orphan_moved': 0.0},
    'pt_steplr_per_batch': {'steps': 240, 'loss0': 2.28, 'loss_end': 2.27, 'chance': 2.3, 'metric_end': 0.253, 'lr_end/lr0': 1e-47, 'lr_low_share': 0.917, 'lr_returns': 0},
    'pt_exponential_per_batch': {'steps': 240, 'loss0': 2.28, 'loss_end': 2.17, 'chance': 2.3, 'metric_end': 0.478, 'lr_end/lr0': 1.16e-11, 'lr_low_share': 0.725, 'lr_returns': 0},
    'pt_steplr_per_epoch': {'steps': 240, 'loss0': 2.28, 'loss_end': 0.0272, 'chance': 2.3, 'metric_end': 0.926, 'lr_end/lr0': 0.1, 'lr_low_share': 0.0, 'lr_returns': 0},
    'pt_cosine_epochs_per_batch': {'steps': 240, 'loss0': 2.28, 'loss_end': 0.0773, 'chance': 2.3, 'metric_end': 0.912, 'lr_end/lr0': 0.976, 'lr_low_share': 0.05, 'lr_returns': 12},
    'pt_cosine_to_zero': {'steps': 240, 'loss0': 2.28, 'loss_end': 0.0353, 'chance': 2.3, 'metric_end': 0.933, 'lr_end/lr0': 4.28e-05, 'lr_low_share': 0.0167, 'lr_returns': 0},
    'pt_labels_shuffled_apart': {'steps': 192, 'loss0': 2.29, 'loss_end': 2.28, 'chance': 2.3, 'metric_end': 0.189, 'loss_end/chance': 0.992, 'grad_med': 0.214},
    'pt_shuffled_together': {'steps': 192, 'loss0': 2.33, 'loss_end': 0.271, 'chance': 2.3, 'metric_end': 0.872, 'loss_end/chance': 0.118, 'grad_med': 0.756},
    'pt_view_not_permute': {'steps': 192, 'loss0': 2.29, 'loss_end': 2.31, 'chance': 2.3, 'metric_end': 0.0909, 'loss_end/chance': 1.0, 'grad_med': 0.16},
    'pt_permute': {'steps': 192, 'loss0': 2.28, 'loss_end': 0.0269, 'chance': 2.3, 'metric_end': 0.929, 'loss_end/chance': 0.0117, 'grad_med': 0.784},
    'pt_sum_loss_sgd': {'steps': 180, 'loss0': 590.0, 'loss_end': 678.0, 'chance': 2.3, 'metric_end': 0.0909, 'loss_max/loss0': 214000000.0, 'loss_end/loss0': 1.15, 'first_nonfinite': None},
    'pt_mean_loss_sgd': {'steps': 180, 'loss0': 2.3, 'loss_end': 0.512, 'chance': 2.3, 'metric_end': 0.835, 'loss_max/loss0': 1.0, 'loss_end/loss0': 0.222, 'first_nonfinite': None},
    'pt_init_std1': {'steps': 192, 'loss0': 13500000.0, 'loss_end': 51600.0, 'chance': 2.3, 'metric_end': 0.785, 'out_std0': 9840000.0, 'loss_end/loss0': 0.00382},
    'pt_init_std0001': {'steps': 192, 'loss0': 2.3, 'loss_end': 2.3, 'chance': 2.3, 'metric_end': 0.101, 'out_std0': 9.84e-18, 'loss_end/loss0': 1.0},
    'pt_init_he': {'steps': 192, 'loss0': 2.47, 'loss_end': 0.00741, 'chance': 2.3, 'metric_end': 0.929, 'out_std0': 0.83, 'loss_end/loss0': 0.003},
    'pt_watch_not_closed': {'steps': 192, 'loss0': 2.28, 'loss_end': 0.481, 'chance': 2.3, 'metric_end': 0.832, 'closed': False},
    'pt_watch_closed': {'steps': 192, 'loss0': 2.28, 'loss_end': 0.481, 'chance': 2.3, 'metric_end': 0.832, 'closed': True},
}
# fmt: on


def _run_and_measure(name: str) -> tuple[Callable[[], Any], Callable[[], dict[str, Any]]]:
    if LABELS[name][1] == "unclosed_watcher":  # a script in a subprocess, closed or not
        closed = LABELS[name][0] is None
        return script_run(closed), script_oracle(closed)
    return gradwatch_run(PROGRAMS[name]), partial(torch_oracle, PROGRAMS[name])


CASES: list[MistakeCase] = build_cases("pytorch", LABELS, ORACLE, SLOW, _run_and_measure)
