"""``trial()``: try the remedies gradwatch ranks for a PyTorch model in short, comparable runs.

    result = trial(make_model, make_optimizer, batches, loss_fn, steps=200)
    result.best, result.rows, result.write_json("trial.json")

The baseline is trained watched; each ranked remedy that can be applied
automatically becomes a variant built from fresh copies (the factories are
called again), trained for the same steps on the same batches from the same
seed, and watched the same way. A remedy that cannot be applied is listed
with the reason. The user's own model and optimizer are never touched.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gradwatch.facts import RELU_FAMILY, SATURATING
from gradwatch.options import takes
from gradwatch.report import Report
from gradwatch.trial import (
    CLIP_NORM,
    LEAKY_SLOPE,
    WEIGHT_DECAY_SCALE,
    Recipe,
    TrialArgs,
    TrialOptions,
    TrialResult,
    clipping_recipe,
    lr_recipes,
    plan,
    plans,
    run_trials,
)

from ._torch import torch
from .torch_facts import model_facts, module_path
from .torch_watch import watch

if TYPE_CHECKING:
    from typing_extensions import Unpack

nn = torch.nn
Batches = Iterable[Any] | Callable[[], Iterable[Any]]

CONV_NORM = {nn.Conv1d: nn.BatchNorm1d, nn.Conv2d: nn.BatchNorm2d, nn.Conv3d: nn.BatchNorm3d}
WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
RELU_SWAP = nn.ReLU  # what relu_family swaps Sigmoid/Tanh to (He init matches it)


@dataclass
class Probe:
    """What one forward pass of a fresh model shows: call order and output shapes of its modules."""

    model: torch.nn.Module
    order: list[str]
    out_dims: dict[str, int]
    inputs: torch.Tensor | None

    def output_layer(self) -> str | None:
        """The last Linear/Conv layer the forward pass called (its output is the prediction)."""
        weighted = {name for name, module in self.model.named_modules() if isinstance(module, WEIGHTED)}
        return next((name for name in reversed(self.order) if name in weighted), None)


@takes(TrialOptions)
def trial(
    make_model: Callable[[], torch.nn.Module],
    make_optimizer: Callable[[Iterator[torch.nn.Parameter]], torch.optim.Optimizer],
    batches: Batches,
    loss_fn: Callable[[Any, Any], torch.Tensor],
    steps: int = 200,
    **options: Unpack[TrialArgs],
) -> TrialResult:
    """Train the baseline and one variant per applicable ranked remedy; returns the comparison.

    ``make_model()`` builds a fresh model, ``make_optimizer(params)`` an optimizer
    for it; ``batches`` is a re-iterable of ``(x, y)`` (cycled when shorter than
    ``steps``) or a callable returning an iterable; ``loss_fn(model(x), y)`` gives
    the scalar loss. The other keywords are ``gradwatch.trial.TrialOptions``.
    """
    chosen = TrialOptions(**options)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not callable(batches) and iter(batches) is batches:
        raise TypeError(
            "batches must be re-iterable (a list, a DataLoader) or a callable returning an iterable: "
            "a one-shot iterator would feed each run different data"
        )
    from gradwatch.console import print_trial, trial_progress

    runner = _Runner(make_model, make_optimizer, batches, loss_fn, steps, chosen.seed, chosen.every_n_steps, chosen.summary_dir)
    with torch.random.fork_rng(), trial_progress(enabled=chosen.print_report) as progress:  # the caller's RNG state is restored
        probe = runner.probe()  # also warms up the framework before the baseline is timed
        planners = {remedy: functools.partial(planner, probe=probe) for remedy, planner in PLANNERS.items()}
        result, _ = run_trials("pytorch", steps, runner.run, lambda ranked, report: plan(ranked, report, planners), chosen, progress=progress)
    if chosen.print_report:
        print_trial(result)
    return result


class _Runner:
    """Builds fresh models from the factories and trains them identically, watched."""

    def __init__(
        self,
        make_model: Callable[[], torch.nn.Module],
        make_optimizer: Callable[[Iterator[torch.nn.Parameter]], torch.optim.Optimizer],
        batches: Batches,
        loss_fn: Callable[[Any, Any], torch.Tensor],
        steps: int,
        seed: int,
        every_n_steps: int,
        summary_dir: str | os.PathLike[str] | None,
    ) -> None:
        self.make_model, self.make_optimizer, self.batches, self.loss_fn = make_model, make_optimizer, batches, loss_fn
        self.steps, self.seed, self.every_n_steps = steps, seed, every_n_steps
        self.summary_dir = Path(summary_dir) if summary_dir is not None else None
        self._last: torch.nn.Parameter | None = None  # a parameter of the previous fresh model

    def fresh_model(self) -> torch.nn.Module:
        torch.manual_seed(self.seed)
        model = self.make_model()
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"make_model() must return a torch.nn.Module, got {type(model).__name__}")
        if self._last is not None and any(p is self._last for p in model.parameters()):
            raise ValueError("make_model() returned parameters of an earlier call: it must build a fresh model each time")
        self._last = next(model.parameters(), None)
        return model

    def probe(self) -> Probe:
        """One training pass of a fresh model on the first batch, recording call order and output sizes."""
        model = self.fresh_model()
        order: list[str] = []
        out_dims: dict[str, int] = {}
        names = {id(module): name for name, module in model.named_modules()}

        def record(module: torch.nn.Module, args: Any, output: Any) -> None:
            name = names[id(module)]
            order.append(name)
            if isinstance(output, torch.Tensor):
                out_dims[name] = output.dim()

        handles = [module.register_forward_hook(record) for module in model.modules()]
        x, y = next(iter(_cycle(self.batches)))
        try:
            torch.autograd.backward(self.loss_fn(model(x), y))  # a forward and backward pass also warm the framework up
        finally:
            for handle in handles:
                handle.remove()
        return Probe(model, order, out_dims, x if isinstance(x, torch.Tensor) else None)

    def run(self, recipe: Recipe, name: str) -> tuple[Report, list[float], float]:
        """Build and train one variant; returns its report, per-step losses and wall time."""
        start = time.perf_counter()
        model = self.fresh_model()
        for _, edit in recipe.edits:
            edit(model)
        optimizer = self.make_optimizer(model.parameters())
        for group in optimizer.param_groups:
            group["lr"] = group["lr"] * recipe.lr_scale
            if "weight_decay" in group:
                group["weight_decay"] = group["weight_decay"] * recipe.weight_decay_scale
        summary = self.summary_dir / f"{name}.json" if self.summary_dir is not None else None
        watcher = watch(
            model, optimizer, summary_path=summary, every_n_steps=self.every_n_steps,
            warn_on=None, print_report=False, autosave_every_n_steps=None,
        )  # fmt: skip
        torch.manual_seed(self.seed)  # same dropout masks and loader order in every run
        losses: list[torch.Tensor] = []
        try:
            for _, (x, y) in zip(range(self.steps), _cycle(self.batches)):
                if recipe.standardize is not None:
                    mean, std = recipe.standardize
                    x = (x - mean) / std
                loss = self.loss_fn(model(x), y)
                optimizer.zero_grad()
                torch.autograd.backward(loss)
                if recipe.clip_norm is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.clip_norm)
                optimizer.step()
                watcher.step(loss)
                losses.append(loss.detach())
        finally:
            report = watcher.close()
        values = torch.stack(losses).float().cpu().tolist() if losses else []
        return report, values, time.perf_counter() - start


def _cycle(batches: Batches) -> Iterator[Any]:
    """The batches, over and over (one pass may be shorter than the run)."""
    while True:
        empty = True
        for batch in batches() if callable(batches) else batches:
            empty = False
            yield batch
        if empty:
            raise ValueError("batches yielded nothing")


PLANNERS: dict[str, Callable[..., list[Recipe] | str]] = {}  # remedy id -> its planner, registered by @plans


# -- one planner per remedy id: a list of recipes, or the reason it cannot be applied ------------------------


def _swap_activations(report: Report, probe: Probe, kinds: frozenset[str], make: Callable[[], torch.nn.Module], remedy: str) -> list[Recipe] | str:
    output = probe.output_layer()
    last_call = len(probe.order) - probe.order[::-1].index(output) if output in probe.order else len(probe.order)
    called_after_output = set(probe.order[last_call:])
    names = [
        name for name, module in probe.model.named_modules()
        if type(module).__name__ in kinds and name and name not in called_after_output
    ]  # fmt: skip
    if not names:
        kinds_text = "/".join(sorted(kinds & {"Sigmoid", "Tanh", "ReLU", "ReLU6"}))
        inside = [n for n, m in probe.model.named_modules() if isinstance(m, (nn.RNN, nn.RNNCell))]
        where = f"; the activation inside {inside[0]} is part of the recurrent cell" if inside else ""
        return (
            f"no nn.{kinds_text} module to swap before the output layer (one applied in forward() as a "
            f"function, e.g. F.relu or torch.sigmoid, cannot be swapped automatically){where}"
        )
    kinds_found = "/".join(sorted({type(probe.model.get_submodule(n)).__name__ for n in names}))
    target = type(make()).__name__ + (f"({LEAKY_SLOPE})" if remedy == "leaky_relu" else "")

    def edit(model: torch.nn.Module) -> None:
        for name in names:
            _set_module(model, name, make())

    return [Recipe((remedy,), (f"{kinds_found} → {target} in {_count(names, 'module')}",), ((0, edit),))]


@plans(PLANNERS, "relu_family")
def plan_relu_family(report: Report, probe: Probe) -> list[Recipe] | str:
    return _swap_activations(report, probe, SATURATING, RELU_SWAP, "relu_family")


@plans(PLANNERS, "leaky_relu")
def plan_leaky_relu(report: Report, probe: Probe) -> list[Recipe] | str:
    return _swap_activations(report, probe, frozenset({"ReLU", "ReLU6"}), lambda: nn.LeakyReLU(LEAKY_SLOPE), "leaky_relu")


@plans(PLANNERS, "matched_init")
def plan_matched_init(report: Report, probe: Probe) -> list[Recipe] | str:
    layers = [name for name, module in probe.model.named_modules() if isinstance(module, WEIGHTED)]
    if not layers:
        return "no Linear or Conv layer to re-initialise"
    return [
        Recipe(
            ("matched_init",), (f"He/LeCun/Xavier init by each layer's activation, biases 0, in {_count(layers, 'layer')}",), ((2, _matched_init),)
        )
    ]


def _matched_init(model: torch.nn.Module) -> None:
    """He, LeCun or Xavier init by the activation that follows each Linear/Conv layer (read from the model now)."""
    activations = {layer.name: layer.activation for layer in model_facts(model).layers}
    with torch.no_grad():
        for name, module in model.named_modules():
            if not isinstance(module, WEIGHTED):
                continue
            activation = activations.get(module_path(name) or type(module).__name__)
            if activation == "LeakyReLU":
                slope = next((m.negative_slope for m in model.modules() if isinstance(m, nn.LeakyReLU)), 0.01)
                nn.init.kaiming_normal_(module.weight, a=slope, nonlinearity="leaky_relu")
            elif activation == "SELU":
                nn.init.kaiming_normal_(module.weight, nonlinearity="linear")  # LeCun: std 1/sqrt(fan_in)
            elif activation in RELU_FAMILY:
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            else:
                nn.init.xavier_normal_(module.weight, gain=nn.init.calculate_gain("tanh") if activation == "Tanh" else 1.0)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


@plans(PLANNERS, "normalization")
def plan_normalization(report: Report, probe: Probe) -> list[Recipe] | str:
    recipes: list[Recipe] = []
    output = probe.output_layer()
    norms: dict[str, Callable[[Any], torch.nn.Module]] = {}  # layer -> the norm to put after it, made from the layer
    for name, module in probe.model.named_modules():
        if not name or name == output or name not in probe.out_dims or not isinstance(module, WEIGHTED):
            continue
        if isinstance(module, nn.Linear):
            two_d = probe.out_dims[name] == 2
            norms[name] = (lambda m: nn.BatchNorm1d(m.out_features)) if two_d else (lambda m: nn.LayerNorm(m.out_features))
        else:
            norms[name] = lambda m: CONV_NORM[type(m)](m.out_channels)
    reasons = []
    if norms:
        kinds = sorted({type(norms[n](probe.model.get_submodule(n))).__name__ for n in norms})

        def edit(model: torch.nn.Module) -> None:
            for name, make in norms.items():
                layer: Any = model.get_submodule(name)
                norm = make(layer).to(device=layer.weight.device, dtype=layer.weight.dtype)
                _set_module(model, name, nn.Sequential(layer, norm))

        recipes.append(Recipe(("normalization",), (f"{'/'.join(kinds)} after {_count(list(norms), 'layer')}, not the output layer",), ((1, edit),)))
    else:
        reasons.append("no Linear/Conv layer besides the output layer was called in the forward pass")
    standardize = _standardize(probe)
    if isinstance(standardize, Recipe):
        recipes.append(standardize)
    else:
        reasons.append(standardize)
    return recipes or "; ".join(reasons)


def _standardize(probe: Probe) -> Recipe | str:
    """Inputs standardised per feature, when they are far from mean 0 and standard deviation 1."""
    x = probe.inputs
    if x is None or not x.is_floating_point() or x.dim() < 2 or len(x) < 2:
        return "inputs are not a floating-point batch that could be standardised"
    mean, std = float(x.mean()), float(x.std())
    if abs(mean) <= 0.5 and 0.5 <= std <= 2.0:
        return f"inputs already look standardised (mean {mean:.2g}, std {std:.2g})"
    feature_mean = x.mean(0, keepdim=True)
    feature_std = x.std(0, keepdim=True)
    feature_std = torch.where(feature_std > 1e-8, feature_std, torch.ones_like(feature_std))
    words = f"inputs standardised per feature from the first batch (mean {mean:.2g} → 0, std {std:.2g} → 1)"
    return Recipe(("normalization",), (words,), standardize=(feature_mean, feature_std))


@plans(PLANNERS, "gradient_clipping")
def plan_gradient_clipping(report: Report, probe: Probe) -> list[Recipe] | str:
    return clipping_recipe(f"global gradient norm clipped at {CLIP_NORM:g}")


@plans(PLANNERS, "lower_lr")
def plan_lower_lr(report: Report, probe: Probe) -> list[Recipe] | str:
    return lr_recipes(report, "lower_lr", report.facts.lr)


@plans(PLANNERS, "raise_lr")
def plan_raise_lr(report: Report, probe: Probe) -> list[Recipe] | str:
    return lr_recipes(report, "raise_lr", report.facts.lr)


@plans(PLANNERS, "reduce_weight_decay")
def plan_reduce_weight_decay(report: Report, probe: Probe) -> list[Recipe] | str:
    decay = report.facts.weight_decay
    if not decay:
        return "the optimizer has no weight decay: an L2 penalty added in your loss_fn cannot be changed automatically"
    words = f"weight decay ×{WEIGHT_DECAY_SCALE:g} ({decay:.3g} → {decay * WEIGHT_DECAY_SCALE:.3g})"
    return [Recipe(("reduce_weight_decay",), (words,), weight_decay_scale=WEIGHT_DECAY_SCALE)]


@plans(PLANNERS, "gated_rnn")
def plan_gated_rnn(report: Report, probe: Probe) -> list[Recipe] | str:
    names = [name for name, module in probe.model.named_modules() if name and type(module) in (nn.RNN, nn.RNNCell)]
    if not names:
        return "no nn.RNN or nn.RNNCell module to replace"

    def edit(model: torch.nn.Module) -> None:
        for name in names:
            _set_module(model, name, _gru_like(model.get_submodule(name)))

    return [
        Recipe(
            ("gated_rnn",),
            (f"nn.RNN → nn.GRU of the same size (a drop-in: same output and hidden-state shapes) in {_count(names, 'module')}",),
            ((0, edit),),
        )
    ]


def _gru_like(rnn: torch.nn.Module) -> torch.nn.Module:
    weight = next(rnn.parameters())
    if isinstance(rnn, nn.RNNCell):
        gru: torch.nn.Module = nn.GRUCell(rnn.input_size, rnn.hidden_size, bias=rnn.bias)
    else:
        gru = nn.GRU(
            rnn.input_size, rnn.hidden_size, num_layers=rnn.num_layers, bias=rnn.bias, batch_first=rnn.batch_first,
            dropout=rnn.dropout, bidirectional=rnn.bidirectional,
        )  # fmt: skip
    return gru.to(device=weight.device, dtype=weight.dtype)


@plans(PLANNERS, "recurrent_init")
def plan_recurrent_init(report: Report, probe: Probe) -> list[Recipe] | str:
    names = [name for name, module in probe.model.named_modules() if isinstance(module, (nn.RNNBase, nn.RNNCellBase))]
    if not names:
        return "no nn.RNN/LSTM/GRU module whose recurrent weights could be re-initialised"

    def edit(model: torch.nn.Module) -> None:
        with torch.no_grad():
            for name in names:
                module: Any = model.get_submodule(name)
                for param_name, param in module.named_parameters():
                    if param_name.startswith("weight_hh"):
                        for block in torch.split(param, int(module.hidden_size)):  # one square block per gate
                            nn.init.orthogonal_(block)
                    elif param_name.startswith("bias_hh") and isinstance(module, (nn.LSTM, nn.LSTMCell)):
                        param.zero_()[module.hidden_size : 2 * module.hidden_size] = 1.0  # forget gate open

    return [
        Recipe(("recurrent_init",), (f"orthogonal hidden-to-hidden weights (LSTM forget-gate bias 1) in {_count(names, 'module')}",), ((2, edit),))
    ]


def _set_module(model: torch.nn.Module, name: str, module: torch.nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def _count(names: Sequence[str], noun: str) -> str:
    shown = ", ".join(names) if len(names) <= 3 else f"{names[0]} … {names[-1]}"
    return f"{len(names)} {noun}{'s' if len(names) != 1 else ''} ({shown})"


__all__ = ["trial"]
