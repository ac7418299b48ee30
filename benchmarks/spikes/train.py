"""One benchmark run: train the tiny GPT on one configuration, measure it every step, feed every detector."""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import oracle
from .corpus import VOCAB, batches, corpus
from .detectors import LIGHTNING_RTOLS, GradwatchFindings, GradwatchProbe, LightningSpikes, ZScoreRule
from .model import ModelConfig, TinyGPT, language_model_loss

STOP_PATIENCE = 60  # a run whose loss stayed >= 2x its running minimum this many steps is stopped (diverged for good)


@dataclass(frozen=True)
class RunConfig:
    """One point of the sweep. ``warmup`` is the number of linear-warmup steps (0: none); the LR is then constant."""

    lr: float
    warmup: int
    qk_norm: bool
    z_loss: float
    eps: float
    seed: int
    steps: int = 400
    width: int = 64
    layers: int = 2
    heads: int = 4
    context: int = 64
    batch: int = 8
    weight_decay: float = 0.0
    beta2: float = 0.95
    clip: float = 0.0  # clip the global gradient norm at this before each step, as nanoGPT and minGPT do (0: no clipping)

    @property
    def name(self) -> str:
        parts = [f"lr{self.lr:g}", f"wu{self.warmup}", "qk" if self.qk_norm else "noqk", f"z{self.z_loss:g}", f"eps{self.eps:.0e}", f"s{self.seed}"]
        parts += [f"clip{self.clip:g}"] if self.clip else []
        return "-".join(parts)

    def learning_rate(self, step: int) -> float:
        return self.lr * min(1.0, (step + 1) / self.warmup) if self.warmup else self.lr


@dataclass
class RunResult:
    """Everything one run produced: its per-step traces, the oracle's verdict, what each detector said."""

    config: RunConfig
    verdict: oracle.Verdict
    steps_run: int
    seconds: float  # wall-clock
    cpu_seconds: float  # this process's CPU time (what the run costs on a shared machine)
    gradwatch: GradwatchFindings
    lightning: dict[float, int | None]  # first flag of SpikeDetection(rtol) per rtol in LIGHTNING_RTOLS
    lightning_live: int | None = None  # first flag of the live SpikeDetection at its shipped defaults
    traces: dict[str, Any] = field(default_factory=dict)

    def trace_json(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "name": self.config.name,
            "oracle": self.verdict.to_dict(),
            "steps_run": self.steps_run,
            "seconds": round(self.seconds, 2),
            "cpu_seconds": round(self.cpu_seconds, 2),
            "gradwatch": self.gradwatch.to_dict(),
            "lightning_first_flag": {f"{rtol:g}": step for rtol, step in self.lightning.items()},
            "lightning_live_flag": self.lightning_live,
            "traces": self.traces,
        }


def load_trace(path: str | os.PathLike[str]) -> RunResult:
    """A run saved by ``--save-traces``, to tabulate again without training (the oracle labels its loss anew)."""
    data = json.loads(Path(path).read_text())
    found = GradwatchFindings()
    for name, seen in data["gradwatch"].items():
        found.raised_step[name] = seen["raised_step"]
        if seen.get("first_step") is not None:
            found.first_step[name] = seen["first_step"]
        if seen.get("severity") is not None:
            found.severity[name] = seen["severity"]
    traces = data["traces"]
    losses = [float(v) for v in traces["loss"]]
    live = data.get("lightning_live_flag", data["lightning_first_flag"].get("2"))
    return RunResult(
        RunConfig(**data["config"]),
        oracle.label(losses),
        data["steps_run"],
        data.get("seconds", 0.0),
        data.get("cpu_seconds", 0.0),
        found,
        {float(rtol): step for rtol, step in data["lightning_first_flag"].items()},
        live,
        traces,
    )


class LayerProbe:
    """Per-layer gradient, update and Adam second-moment sizes of the weight matrices, measured every step."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.names = [name for name, p in model.named_parameters() if p.dim() >= 2]
        self.params = [p for name, p in model.named_parameters() if p.dim() >= 2]
        self.optimizer = optimizer
        self.before = [p.detach().clone() for p in self.params]

    def before_step(self) -> list[float]:
        """Gradient norms per layer (call between backward and the optimizer step); remembers the weights."""
        torch._foreach_copy_(self.before, [p.detach() for p in self.params])
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        return torch.stack(torch._foreach_norm(grads)).tolist()

    def after_step(self) -> tuple[list[float], list[float], list[float]]:
        """(update norm, weight norm, RMS of Adam's second-moment estimate sqrt(mean v)) per layer."""
        with torch.no_grad():
            updates = torch._foreach_sub([p.detach() for p in self.params], self.before)
            update_norms = torch.stack(torch._foreach_norm(updates)).tolist()
            weight_norms = torch.stack(torch._foreach_norm([p.detach() for p in self.params])).tolist()
            moments = [self.optimizer.state.get(p, {}).get("exp_avg_sq") for p in self.params]
            if any(v is None for v in moments):
                return update_norms, weight_norms, [math.nan] * len(self.params)
            sizes = [v.numel() for v in moments if v is not None]
            sums = torch.stack([v.sum() for v in moments if v is not None]).tolist()
            second = [math.sqrt(max(total, 0.0) / size) for total, size in zip(sums, sizes)]
        return update_norms, weight_norms, second


def run(config: RunConfig, *, detectors: bool = True, keep_traces: bool = True) -> RunResult:
    """Train one configuration, deterministically (one thread, fixed seeds); stop at NaN or after a divergence."""
    torch.set_num_threads(1)
    torch.manual_seed(config.seed)
    data = corpus()
    model = TinyGPT(
        ModelConfig(vocab=VOCAB, context=config.context, width=config.width, layers=config.layers, heads=config.heads, qk_norm=config.qk_norm)
    )
    model.measure_attention(True)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.learning_rate(0),
        betas=(0.9, config.beta2),
        eps=config.eps,
        foreach=True,
    )
    generator = torch.Generator().manual_seed(config.seed)
    probe = LayerProbe(model, optimizer)
    zscore = ZScoreRule()
    lightning = LightningSpikes() if detectors else None
    gradwatch = GradwatchProbe(model, optimizer) if detectors else None
    loss_trace: list[float] = []
    traces: dict[str, Any] = {
        "loss": loss_trace,
        "lr": [],
        "grad_norm": [],
        "zscore": [],
        "max_attn_logit": [],
        "out_logsumexp": [],
        "layers": probe.names,
        "layer_sizes": [p.numel() for p in probe.params],  # to turn a norm into an RMS: norm / sqrt(size)
        "layer_grad_norm": [],
        "layer_update_norm": [],
        "layer_weight_norm": [],
        "layer_adam_v_rms": [],
    }
    started, cpu_started = time.perf_counter(), time.process_time()
    step = 0
    try:
        for step in range(config.steps):
            lr = config.learning_rate(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            inputs, targets = batches(data, config.batch, config.context, generator)
            total, cross_entropy, log_partition = language_model_loss(model(inputs), targets, config.z_loss)
            optimizer.zero_grad(set_to_none=True)
            total.backward()  # type: ignore[no-untyped-call]
            layer_grads = probe.before_step()
            grad_norm = math.sqrt(sum(g * g for g in layer_grads) + _small_grad_sq(model))  # before any clipping
            if config.clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
            optimizer.step()
            if gradwatch is not None:
                gradwatch.step(total.detach(), step)
            if lightning is not None:
                lightning.update(total.detach(), step)
            updates, weights, second = probe.after_step()
            loss_value = float(cross_entropy.detach())
            loss_trace.append(loss_value)
            traces["lr"].append(lr)
            traces["grad_norm"].append(grad_norm)
            traces["zscore"].append(zscore.update(grad_norm))
            traces["max_attn_logit"].append([attn.max_logit for attn in model.attention_layers()])
            traces["out_logsumexp"].append(log_partition)
            traces["layer_grad_norm"].append(layer_grads)
            traces["layer_update_norm"].append(updates)
            traces["layer_weight_norm"].append(weights)
            traces["layer_adam_v_rms"].append(second)
            if not math.isfinite(loss_value):
                break
            if step % 20 == 19 and oracle.diverged_for_good(loss_trace, STOP_PATIENCE):
                break
    finally:
        found = gradwatch.close() if gradwatch is not None else GradwatchFindings()
        live_flag = lightning.live_flag if lightning is not None else None
        flagged = {rtol: lightning.first_flag(rtol) for rtol in LIGHTNING_RTOLS} if lightning is not None else {}
        if lightning is not None:
            traces["lightning_rel_jump"] = lightning.relative_jump
            lightning.close()
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    verdict = oracle.label(loss_trace)
    return RunResult(
        config,
        verdict,
        len(loss_trace),
        seconds,
        cpu_seconds,
        found,
        flagged,
        live_flag,
        _rounded(traces) if keep_traces else {"zscore": traces["zscore"], "loss": loss_trace},
    )


def _small_grad_sq(model: torch.nn.Module) -> float:
    """Squared gradient norm of the vectors (biases, LayerNorm), which the layer probe leaves out."""
    grads = [p.grad for p in model.parameters() if p.dim() < 2 and p.grad is not None]
    return float(sum(float(v) ** 2 for v in torch._foreach_norm(grads))) if grads else 0.0


def _rounded(value: Any) -> Any:
    """Floats to 5 significant digits (non-finite ones as strings), for compact JSON traces."""
    if isinstance(value, float):
        return float(f"{value:.5g}") if math.isfinite(value) else str(value)
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value
