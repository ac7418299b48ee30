"""The independent oracle of the mistakes clinic (``mistakes``); it never imports gradwatch.

Each program is written once and runs with an instrument attached: gradwatch's under ``Case.run``,
here a ``Recorder`` that reruns it with the same seed and measures, with plain PyTorch hooks:

* every step's training loss; the probe metric (accuracy, or R² for a regression) at the start and end;
* per optimizer step (a step post-hook): the learning rate it used, the total gradient norm, whether the
  model ran in training mode (every module's ``training`` flag at the last forward), and whether the
  gradient it applies still holds one an earlier optimizer step already applied (a hook on the first
  trainable parameter sees ``.grad`` before each backward adds to it: ``stale``);
* backward passes per optimizer step; the share of parameters that get gradients but sit in no param
  group (``orphan_share``) and how far they moved; the share of parameters with ``requires_grad``;
* the output of the first training forward (its std) and of the last (its domain: probabilities, log
  probabilities, non-negative, logits, constant), against what the program's loss expects;
* the probe's output shape against its target's (a loss that broadcasts).

``shows(topic, numbers)`` holds the rule that labels each mistake's effect; a sick case must show its
mistake and its healthy twin must not, and a healthy twin must train (``loss_end <= 0.7 loss0``, or a
metric that rose). ``python -m benchmarks.clinic.mistakes_oracle [NAME ...]`` reruns every case under
the oracle and prints the numbers next to the recorded ones.
"""

from __future__ import annotations

import importlib
import math
import statistics
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

MISTAKES = (
    "gradients_not_cleared",
    "output_loss_mismatch",
    "loss_broadcast",
    "eval_mode_training",
    "params_not_in_optimizer",
    "frozen_model",
    "lr_schedule_collapse",
    "chance_level_loss",
    "summed_loss",
    "init_scale",
    "unclosed_watcher",
)
GENERIC = ("steps", "loss0", "loss_end", "chance", "metric_end")
TOPIC_KEYS: dict[str, tuple[str, ...]] = {
    "gradients_not_cleared": ("stale_share", "backwards_per_step", "grad_growth", "loss_max/loss0"),
    "output_loss_mismatch": ("out_kind", "expects"),
    "loss_broadcast": ("shapes",),
    "eval_mode_training": ("eval_share",),
    "params_not_in_optimizer": ("orphan_share", "orphan_moved"),
    "frozen_model": ("trainable_share", "loss_end/loss0"),
    "lr_schedule_collapse": ("lr_end/lr0", "lr_low_share", "lr_returns"),
    "chance_level_loss": ("loss_end/chance", "grad_med"),
    "summed_loss": ("loss_max/loss0", "loss_end/loss0", "first_nonfinite"),
    "init_scale": ("out_std0", "loss_end/loss0"),
    "precision": ("dtype", "loss_end/loss0"),
    "unclosed_watcher": ("closed",),
}

# What a correct plain-English diagnosis of each mistake must contain (any one; ``*`` ends a stem).
WORDS: dict[str, tuple[str, ...]] = {
    "gradients_not_cleared": ("zero_grad", "not cleared", "never cleared", "not zeroed"),
    "output_loss_mismatch": ("softmax", "sigmoid", "from_logits", "logits"),
    "loss_broadcast": ("broadcast*", "shape"),
    "eval_mode_training": ("eval", "eval()", "train()", "training mode"),
    "params_not_in_optimizer": ("param group*", "param_group*", "not in the optimizer", "not in any optimizer", "outside the optimizer"),
    "frozen_model": ("frozen", "requires_grad", "trainable"),
    "lr_schedule_collapse": ("schedule*", "lr_scheduler"),
    "chance_level_loss": ("chance", "label*"),
    "summed_loss": ("reduction", "summed", "sum"),
    "init_scale": ("initiali*", "init"),
    "unclosed_watcher": ("close", "closed"),
}


@dataclass
class Probe:
    """What the oracle evaluates on: a fixed held-out batch and the task; ``expects`` is what the program's loss takes."""

    x: Any
    y: torch.Tensor
    task: str = "multiclass"  # multiclass, binary, regression, lm
    expects: str = "logits"  # logits, log_probs, probs, values
    forward: Callable[[nn.Module, Any], torch.Tensor] | None = None

    @property
    def chance(self) -> float:
        """The loss of the best input-independent prediction (label entropy; the target variance for a regression)."""
        y = self.y.detach().double().flatten()
        if self.task == "regression":
            return float(y.var(unbiased=False))
        counts = torch.bincount(y.long())
        p = counts[counts > 0].double() / len(y)
        return float(-(p * p.log()).sum())


class Instrument(Protocol):
    def step(self, loss: Any) -> Any: ...


Attach = Callable[[nn.Module, "torch.optim.Optimizer | None", "Probe | None"], Instrument]


def unwrap(optimizer: Any) -> torch.optim.Optimizer | None:
    """The torch optimizer inside a Lightning or accelerate wrapper."""
    for _ in range(4):  # AcceleratedOptimizer subclasses Optimizer and holds the real one in .optimizer
        inner = getattr(optimizer, "optimizer", None) or getattr(optimizer, "_optimizer", None)
        if inner is None or inner is optimizer:
            break
        optimizer = inner
    return optimizer if isinstance(optimizer, torch.optim.Optimizer) else None


def output_tensor(output: Any) -> torch.Tensor | None:
    """The prediction in a forward's output (a tensor, a tuple's first item, or a Hugging Face output's logits)."""
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(output, tuple | list) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return None


def output_kind(out: torch.Tensor) -> str:
    """The domain of a batch of outputs: constant, probs, log_probs, nonneg or logits."""
    out = out.detach().double()
    if out.numel() > 1 and float(out.std()) <= 1e-6 * (1 + float(out.abs().mean())):  # float rounding aside
        return "constant"
    if out.dim() >= 2 and out.shape[-1] > 1:
        if out.min() >= 0 and out.max() <= 1 and torch.allclose(out.sum(-1), torch.ones(()).double(), atol=1e-3):
            return "probs"
        if out.max() <= 0 and torch.allclose(out.exp().sum(-1), torch.ones(()).double(), atol=1e-3):
            return "log_probs"
        return "nonneg" if out.min() >= 0 else "logits"
    return "probs" if out.min() >= 0 and out.max() <= 1 else "logits"


def metric(task: str, out: torch.Tensor, y: torch.Tensor) -> float | None:
    """Accuracy (classification; a binary output in [0, 1] is cut at 0.5, logits at 0) or R² (regression)."""
    out = out.detach().double()
    if task == "multiclass":
        return float((out.argmax(-1) == y).double().mean())
    if task == "binary":
        cut = 0.5 if out.min() >= 0 and out.max() <= 1 else 0.0
        return float(((out.flatten() > cut).double() == y.double().flatten()).double().mean())
    if task == "regression":
        y = y.double().flatten()
        return float(1 - ((out.flatten()[: len(y)] - y) ** 2).mean() / y.var(unbiased=False))
    return None


class Recorder:
    """Records a PyTorch training run through hooks (module docstring); ``step(loss)`` once per step, ``close()`` at the end."""

    def __init__(self, model: nn.Module, optimizer: Any, probe: Probe | None = None) -> None:
        self.model, self.optimizer, self.probe = model, unwrap(optimizer), probe
        self.losses: list[float] = []
        self.lrs: list[float] = []
        self.grad_norms: list[float] = []
        self.stale: list[bool] = []
        self.eval_mode: list[bool] = []
        self.backwards = 0
        self.out_std0: float | None = None
        self.last_out: torch.Tensor | None = None
        self.model_loss: torch.Tensor | None = None  # a Hugging Face model's own loss, from its last training forward
        self.closed = True
        params = list(model.parameters())
        total = sum(p.numel() for p in params)
        self.trainable_share = sum(p.numel() for p in params if p.requires_grad) / total
        self.dtype = str(params[0].dtype).removeprefix("torch.")
        self.start = {id(p): p.detach().clone() for p in params}
        self.in_optimizer = {id(p) for g in self.optimizer.param_groups for p in g["params"]} if self.optimizer else set()
        self.orphans: dict[int, torch.Tensor] = {}  # parameters in no param group that received a gradient
        self._mode, self._applied, self._stale_now, self._probing = True, False, False, False
        first = next((p for p in params if p.requires_grad and (not self.in_optimizer or id(p) in self.in_optimizer)), None)
        self.first = first
        self.handles: list[Any] = [model.register_forward_pre_hook(self._pre_forward), model.register_forward_hook(self._forward)]
        if first is not None:
            self.handles.append(first.register_hook(self._grad_hook))
        if self.optimizer is not None:
            self.handles.append(self.optimizer.register_step_post_hook(self._post_step))
            for p in params:
                if p.requires_grad and id(p) not in self.in_optimizer:
                    self.handles.append(p.register_post_accumulate_grad_hook(self._got_gradient))
        self.metric0, self.shapes = self._evaluate()

    # -- hooks --------------------------------------------------------------------------------------
    def _pre_forward(self, module: nn.Module, args: Any) -> None:
        if not self._probing and torch.is_grad_enabled():
            self._mode = all(m.training for m in self.model.modules())

    def _forward(self, module: nn.Module, args: Any, output: Any) -> None:
        if self._probing or not torch.is_grad_enabled():
            return
        out = output_tensor(output)
        if out is not None:
            self.last_out = out.detach()
            if self.out_std0 is None:
                self.out_std0 = float(out.detach().double().std())
        if getattr(output, "loss", None) is not None:
            self.model_loss = output.loss.detach()

    def _grad_hook(self, grad: torch.Tensor) -> None:
        self.backwards += 1
        held = self.first.grad if self.first is not None else None
        if held is None or not bool(held.any()):
            self._applied = False
        elif self._applied:
            self._stale_now = True

    def _post_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        """After the step (Lightning runs forward and backward inside ``step(closure)``): what this step used."""
        self.lrs.append(float(optimizer.param_groups[0]["lr"]))
        norms = [p.grad.detach().double().norm() for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        self.grad_norms.append(float(torch.stack(norms).norm()) if norms else 0.0)
        self.stale.append(self._stale_now)
        self._stale_now = False
        self.eval_mode.append(not self._mode)
        self._applied = True

    def _got_gradient(self, param: torch.Tensor) -> None:
        self.orphans[id(param)] = param

    # -- the run ------------------------------------------------------------------------------------
    def step(self, loss: Any) -> None:
        loss = self.model_loss if loss is None else loss
        self.losses.append(float(loss.detach().double()) if isinstance(loss, torch.Tensor) else float(loss))

    def _evaluate(self) -> tuple[float | None, str]:
        """The probe metric and the probe's output vs target shapes, in eval mode without gradients (no state changes)."""
        if self.probe is None:
            return None, "-"
        modes = {m: m.training for m in self.model.modules()}
        self._probing = True
        try:
            self.model.eval()
            x = self.probe.x
            if isinstance(x, torch.Tensor) and x.is_floating_point():
                x = x.to(next(self.model.parameters()).dtype)  # a float64 or bfloat16 model (Lightning converts it late)
            with torch.no_grad():
                out = output_tensor(self.probe.forward(self.model, x) if self.probe.forward else self.model(x))
        finally:
            self._probing = False
            for m, mode in modes.items():
                m.training = mode
        assert out is not None
        shapes = f"{list(out.shape)} vs {list(self.probe.y.shape)}"
        return metric(self.probe.task, out, self.probe.y), shapes

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.metric_end, _ = self._evaluate()

    def numbers(self) -> dict[str, Any]:
        """Everything measured, as a flat dict (``summarise`` picks a topic's keys)."""
        losses, n = self.losses, len(self.losses)
        finite = [v for v in losses if math.isfinite(v)]
        tail = losses[-max(1, n // 10) :]
        loss0 = losses[0] if losses else math.nan
        loss_end = statistics.median(tail) if tail else math.nan
        chance = self.probe.chance if self.probe is not None and self.probe.task != "lm" else None
        if self.probe is not None and self.probe.task == "lm":
            vocab = getattr(getattr(self.model, "config", None), "vocab_size", None)
            chance = math.log(int(vocab)) if vocab else None
        grads = self.grad_norms
        orphans = list(self.orphans.values())
        numel = sum(p.numel() for p in self.model.parameters())
        moved = max((float((p.detach() - self.start[id(p)]).abs().max()) for p in orphans), default=0.0)
        lr0 = self.lrs[0] if self.lrs else math.nan
        return {
            "steps": n,
            "loss0": loss0,
            "loss_end": loss_end,
            "chance": chance,
            "metric0": self.metric0,
            "metric_end": self.metric_end,
            "loss_end/loss0": loss_end / loss0 if loss0 else math.nan,
            "loss_end/chance": loss_end / chance if chance else None,
            "loss_max/loss0": max(finite) / loss0 if finite and loss0 else math.nan,
            "first_nonfinite": next((i + 1 for i, v in enumerate(losses) if not math.isfinite(v)), None),
            "grad_med": statistics.median(grads) if grads else 0.0,
            "grad_growth": statistics.median(grads[-max(1, len(grads) // 10) :]) / statistics.median(grads[:3])
            if grads and statistics.median(grads[:3]) > 0
            else math.nan,
            "stale_share": sum(self.stale) / len(self.stale) if self.stale else 0.0,
            "eval_share": sum(self.eval_mode) / len(self.eval_mode) if self.eval_mode else 0.0,
            "backwards_per_step": self.backwards / len(grads) if grads else math.nan,
            "lr_end/lr0": self.lrs[-1] / lr0 if self.lrs and lr0 else math.nan,
            "lr_low_share": sum(lr < 1e-3 * lr0 for lr in self.lrs) / len(self.lrs) if self.lrs else 0.0,
            "lr_returns": _returns(self.lrs, lr0),
            "orphan_share": sum(p.numel() for p in orphans) / numel,
            "orphan_moved": moved,
            "trainable_share": self.trainable_share,
            "dtype": self.dtype,
            "out_std0": self.out_std0,
            "out_kind": output_kind(self.last_out) if self.last_out is not None else "-",
            "expects": self.probe.expects if self.probe is not None else "-",
            "shapes": self.shapes,
            "closed": self.closed,
        }


# -- labels -----------------------------------------------------------------------------------------


def _get(numbers: Mapping[str, Any], key: str) -> float:
    value = numbers.get(key)
    return float(value) if isinstance(value, int | float) and value is not None else math.nan


def shows(topic: str, n: Mapping[str, Any]) -> bool:
    """Whether the numbers show the effect of ``topic``'s mistake (the label rule of each mistake)."""
    if topic == "gradients_not_cleared":
        return _get(n, "stale_share") >= 0.5
    if topic == "output_loss_mismatch":
        return n.get("out_kind") == "constant" or n.get("out_kind") != n.get("expects")
    if topic == "loss_broadcast":
        left, _, right = str(n.get("shapes")).partition(" vs ")
        return left != right
    if topic == "eval_mode_training":
        return _get(n, "eval_share") >= 0.5
    if topic == "params_not_in_optimizer":
        return _get(n, "orphan_share") > 0 and _get(n, "orphan_moved") == 0
    if topic == "frozen_model":
        return _get(n, "trainable_share") < 0.05 and _get(n, "loss_end/loss0") > 0.7
    if topic == "lr_schedule_collapse":  # the rate spent most steps near 0, or went there and back again and again
        return _get(n, "lr_low_share") >= 0.5 or _get(n, "lr_returns") >= 3
    if topic == "chance_level_loss":
        return _get(n, "loss_end/chance") >= 0.9 and _get(n, "grad_med") != 0  # gradients flow (NaN: not measured)
    if topic == "summed_loss":
        return n.get("first_nonfinite") is not None or _get(n, "loss_max/loss0") >= 10 or _get(n, "loss_end/loss0") >= 0.9
    if topic == "init_scale":
        std = _get(n, "out_std0")
        return not 0.01 <= std <= 10
    if topic == "unclosed_watcher":
        return n.get("closed") is False
    return False  # "precision": float64 and bfloat16 runs are no mistake


def trains(n: Mapping[str, Any]) -> bool:
    """A healthy run learns: the loss falls to <= 70% of its start (or, when it starts near 0, the metric rises)."""
    ratio = _get(n, "loss_end") / _get(n, "loss0") if _get(n, "loss0") else math.nan
    return ratio <= 0.7 or (_get(n, "metric_end") - _get(n, "metric0") >= 0.3)


def summarise(topic: str, numbers: Mapping[str, Any]) -> dict[str, Any]:
    """The numbers a case records: the generic ones and its topic's, rounded to 3 significant digits."""
    return {key: _round(numbers.get(key)) for key in (*GENERIC, *TOPIC_KEYS[topic])}


def verdict(mistake: str | None, topic: str, numbers: Mapping[str, Any]) -> str:
    """What the oracle says of a case's label: ``ok`` when a sick case shows its mistake, a healthy one not and it trains."""
    effect = shows(topic, numbers)
    if mistake is not None:
        return "ok" if effect else "NO EFFECT"
    if effect:
        return "SHOWS MISTAKE"
    return "ok" if trains(numbers) else "DOES NOT TRAIN"


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.3g}") if math.isfinite(value) else value
    return value


def torch_oracle(program: Callable[[Attach], None]) -> dict[str, Any]:
    """Run a plain-PyTorch program under a ``Recorder``; every number it measured."""
    recorders: list[Recorder] = []

    def attach(model: nn.Module, optimizer: torch.optim.Optimizer | None, probe: Probe | None) -> Recorder:
        recorders.append(Recorder(model, optimizer, probe))
        return recorders[-1]

    torch.set_num_threads(1)
    program(attach)
    recorders[0].close()
    return recorders[0].numbers()


@dataclass(frozen=True)
class MistakeCase:
    """One program that makes one everyday mistake on purpose (``mistake``), or its healthy twin (``mistake=None``).

    ``topic`` is the mistake the case is about (a twin's is the one its sick sibling makes, or
    ``precision`` for float64/bfloat16 runs); ``words`` are what a correct plain-English diagnosis must
    contain (any one of them; ``*`` ends a stem); ``run`` trains it under gradwatch and returns the
    report (None: gradwatch produced none); ``measure`` trains it under the oracle; ``oracle`` holds the
    numbers recorded when the case was labelled; ``fast``: under ~3 s on one core.
    """

    name: str
    framework: str
    mistake: str | None
    topic: str
    words: tuple[str, ...]
    run: Callable[[], Any]
    measure: Callable[[], dict[str, Any]]
    about: str = ""
    source: str = ""
    oracle: Mapping[str, Any] = field(default_factory=dict)
    twin: str | None = None
    fast: bool = False


MODULES = ("mistakes_torch_cases", "mistakes_lightning", "mistakes_keras", "mistakes_hf")
Label = tuple["str | None", str, tuple[str, ...], str, str, "str | None"]  # mistake, topic, words, about, source, twin


def build_cases(
    framework: str,
    labels: Mapping[str, Label],
    recorded: Mapping[str, Mapping[str, Any]],
    slow: Iterable[str],
    run_and_measure: Callable[[str], tuple[Callable[[], Any], Callable[[], dict[str, Any]]]],
) -> list[MistakeCase]:
    """Every labelled program of one framework as a case; ``run_and_measure(name)``: its gradwatch run and its oracle."""
    cases = []
    for name, (mistake, topic, words, about, source, twin) in labels.items():
        run, measure = run_and_measure(name)
        words = words or WORDS.get(topic, ())
        cases.append(MistakeCase(name, framework, mistake, topic, words, run, measure, about, source, recorded.get(name, {}), twin, name not in slow))
    return cases


def all_cases(names: Iterable[str] = ()) -> list[MistakeCase]:
    """Every case whose framework is installed (only ``names``, when given); gradwatch is imported by ``run`` only."""
    wanted = set(names)
    cases: list[MistakeCase] = []
    for module in MODULES:
        try:
            found = importlib.import_module(f".{module}", __package__).CASES
        except ImportError as exc:
            print(f"skipping {module}: {exc}")
            continue
        cases += [c for c in found if not wanted or c.name in wanted]
    return cases


def main(argv: list[str]) -> int:
    """Rerun cases under the oracle; print labels and numbers next to the recorded ones (``--literal``: as ORACLE entries)."""
    literal = "--literal" in argv
    status = 0
    for case in all_cases([a for a in argv if not a.startswith("--")]):
        numbers = case.measure()
        label = verdict(case.mistake, case.topic, numbers)
        now = summarise(case.topic, numbers)
        same = bool(case.oracle) and all(_close(now[k], case.oracle.get(k)) for k in now)
        status |= label != "ok" or not same
        if literal:
            print(f"    {case.name!r}: {now},  # {label}")
        else:
            print(f"{case.name}: {case.mistake or 'healthy'} [{case.topic}] oracle {label}; recorded numbers {'match' if same else 'DIFFER'}")
            print(f"    now      {now}")
            if not same:
                print(f"    recorded {dict(case.oracle)}")
        sys.stdout.flush()
    return status


def _returns(lrs: list[float], lr0: float) -> int:
    """Times the rate came back to its first value's half after falling under 1% of it (a schedule run again and again)."""
    count, low = 0, False
    for lr in lrs:
        if lr < 0.01 * lr0:
            low = True
        elif low and lr >= 0.5 * lr0:
            count, low = count + 1, False
    return count


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=0.02, abs_tol=1e-9)
    return bool(a == b)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
