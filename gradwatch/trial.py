"""Remedy trials as data: the baseline run, one short run per remedied variant, and the verdict.

Adapters (``gradwatch.integrations.pytorch.trial``, ``...keras.trial``) train
the runs; this module plans them (``plan``: which ``Recipe`` per ranked
remedy, from the adapter's planners, and which pairs to combine), holds and
judges their outcome, and reads and writes it as JSON (schema
``gradwatch.trial/1``).
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict, TypeVar

from . import remedies as ranking
from .report import Report, read_json, write_atomic
from .summary_check import TRIAL_SCHEMA, SummaryError

FINAL_SHARE = 0.1  # final loss: median over this share of the last steps

# What the automatic variants change; the same in every adapter.
CLIP_NORM = 1.0  # global gradient norm for gradient_clipping
LOWER_LR = 0.1  # learning-rate factor for lower_lr (the remedy says 3-10x lower)
WEIGHT_DECAY_SCALE = 0.01  # factor on weight decay / regularizer strength for reduce_weight_decay
LEAKY_SLOPE = 0.1  # LeakyReLU slope for leaky_relu: large enough to pull dead units back within a short run
TARGET_UPDATE = 1e-3  # healthy |dW|/|W| per step (CS231n's rule of thumb), to size a learning-rate raise
LR_RAISE_RANGE = (10.0, 1e6)
LR_LOWER_RANGE = (1e-6, LOWER_LR)
NOT_AUTOMATIC = {
    "skip_connections": "changes the forward pass: where a residual path y = x + f(x) goes is a design decision of yours",
    "layerwise_pretraining": "needs a training schedule of its own (greedy layer by layer, then fine-tuning)",
    "truncated_bptt": "changes how your sequences are cut and fed, which lives in your data pipeline",
    "random_init": "tried as matched_init, which draws every Linear/Conv/Dense layer's weights afresh",
    **dict.fromkeys(
        ("clear_gradients", "train_mode", "add_to_optimizer", "fix_schedule", "pair_inputs_and_labels", "unfreeze"),
        "a fix to your training code (the loop, the optimizer, the schedule or the data), not to the model: apply it there",
    ),
    "qk_norm": "changes the attention's forward pass (a LayerNorm on queries and keys): a design decision of yours",
    "z_loss": "changes your loss (a small penalty on the output log-partition), which lives in your training code",
    "skip_batch": "changes your training loop (skip the update when the loss or the gradient norm jumps)",
    **dict.fromkeys(
        ("warmup", "adam_epsilon"),
        "not tried automatically yet: trial() scales the learning rate and weight decay, it builds no schedule or optimizer",
    ),
}


Edit = Callable[..., Any]  # a framework's change to a fresh model (torch edits it in place, Keras returns a rebuilt one)


@dataclass(frozen=True)
class Recipe:
    """How one variant differs from the baseline: model edits (in order) and optimisation changes.

    ``edits`` are ``(order, edit)``: activation swaps 0, inserted layers 1,
    re-initialisation 2, so combined recipes apply them in that order.
    ``fresh``: indices of layers whose new initialisation is the point (the
    others keep the baseline's initial weights where the framework rebuilds
    the model). ``standardize``: the adapter's way to standardise the inputs,
    or None.
    """

    remedies: tuple[str, ...]
    words: tuple[str, ...]
    edits: tuple[tuple[int, Edit], ...] = ()
    fresh: frozenset[int] = frozenset()
    lr_scale: float = 1.0
    weight_decay_scale: float = 1.0
    clip_norm: float | None = None
    standardize: Any = None

    def __add__(self, other: Recipe) -> Recipe:
        return Recipe(
            self.remedies + other.remedies,
            self.words + other.words,
            tuple(sorted(self.edits + other.edits, key=lambda pair: pair[0])),
            self.fresh | other.fresh,
            self.lr_scale * other.lr_scale,
            self.weight_decay_scale * other.weight_decay_scale,
            self.clip_norm or other.clip_norm,
            self.standardize if self.standardize is not None else other.standardize,
        )


Planner = Callable[[Report], "list[Recipe] | str"]  # the recipes for one remedy on this model, or why it cannot be applied


def plan(
    ranked: Sequence[str], report: Report, planners: Mapping[str, Planner], *, check: Callable[[Recipe], str | None] | None = None
) -> tuple[list[Recipe], list[NotApplicable]]:
    """The variants to train for ``ranked`` remedies: each applicable one's recipes, then the combinations.

    ``planners``: the adapter's planner per remedy id, given the report.
    ``check``: why this model cannot take a recipe (None: it can). The rest are
    listed with their reason, never dropped.
    """
    recipes: list[Recipe] = []
    skipped: list[NotApplicable] = []
    for remedy in ranked:
        planner = planners.get(remedy)
        planned = NOT_AUTOMATIC.get(remedy) or (planner(report) if planner else "no automatic variant of it in this framework yet")
        if isinstance(planned, str):
            skipped.append(NotApplicable(remedy, planned))
            continue
        for recipe in planned:
            reason = check(recipe) if check is not None else None
            if reason is None:
                recipes.append(recipe)
            else:
                skipped.append(NotApplicable(remedy, reason))
    singles = [r for r in recipes if len(r.remedies) == 1]
    return recipes + [singles[i] + singles[j] for i, j in combinations([r.remedies for r in singles])], skipped


P = TypeVar("P", bound=Callable[..., "list[Recipe] | str"])


def plans(table: dict[str, Callable[..., list[Recipe] | str]], remedy: str) -> Callable[[P], P]:
    """Register the decorated function as an adapter's planner for ``remedy`` in its ``table``."""

    def register(planner: P) -> P:
        table[remedy] = planner
        return planner

    return register


def lr_recipes(report: Report, remedy: str, lr: float | None) -> list[Recipe]:
    """``lower_lr`` or ``raise_lr``: one recipe per sized factor, its words showing ``lr`` (None: unknown) before and after."""
    scales = lr_lower_scales(report) if remedy == "lower_lr" else lr_raise_scales(report)
    return [Recipe((remedy,), (f"{_lr_words(lr, scale)}, {basis}",), lr_scale=scale) for scale, basis in scales]


def _lr_words(lr: float | None, scale: float) -> str:
    return f"learning rate ×{scale:g}" + (f" ({lr:.3g} → {lr * scale:.3g})" if lr is not None else "")


def clipping_recipe(words: str) -> list[Recipe]:
    """``gradient_clipping``: the global gradient norm clipped at ``CLIP_NORM``, as the adapter says it in ``words``."""
    return [Recipe(("gradient_clipping",), (words,), clip_norm=CLIP_NORM)]


def final_loss(losses: Sequence[float]) -> float | None:
    """Median of the last 10% of the steps' losses (at least one); None if any of them is not finite."""
    if not losses:
        return None
    tail = list(losses[-max(1, math.ceil(FINAL_SHARE * len(losses))) :])
    if not all(math.isfinite(value) for value in tail):
        return None
    return float(statistics.median(tail))


@dataclass(frozen=True)
class TrialRow:
    """One trained run: the remedies applied (none for the baseline), in words, and its outcome.

    ``symptoms_before``: the baseline's symptoms at warning level or above;
    ``symptoms_after``: this run's. ``final_loss`` is None when the run diverged
    (a non-finite loss at the end); ``loss_ratio`` is ``final_loss`` over the
    baseline's, None when either is None.
    """

    remedies: tuple[str, ...]
    change: str
    symptoms_before: tuple[str, ...]
    symptoms_after: tuple[str, ...]
    final_loss: float | None
    loss_ratio: float | None
    seconds: float

    @property
    def label(self) -> str:
        return " + ".join(self.remedies) or "baseline"

    @property
    def cleared(self) -> tuple[str, ...]:
        """Baseline symptoms this run no longer shows."""
        return tuple(s for s in self.symptoms_before if s not in self.symptoms_after)

    @property
    def new(self) -> tuple[str, ...]:
        """Symptoms this run shows that the baseline did not."""
        return tuple(s for s in self.symptoms_after if s not in self.symptoms_before)

    def clears(self, symptoms: Iterable[str] | None = None) -> bool:
        """True when none of ``symptoms`` (default: all of the baseline's) nor a new symptom is left."""
        wanted = self.symptoms_before if symptoms is None else tuple(symptoms)
        return not self.new and not any(s in self.symptoms_after for s in wanted)

    def to_dict(self) -> dict[str, Any]:
        return {
            "remedies": list(self.remedies),
            "change": self.change,
            "symptoms_before": list(self.symptoms_before),
            "symptoms_after": list(self.symptoms_after),
            "final_loss": self.final_loss,
            "loss_ratio": self.loss_ratio,
            "seconds": self.seconds,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialRow:
        return cls(
            remedies=tuple(data["remedies"]),
            change=str(data["change"]),
            symptoms_before=tuple(data["symptoms_before"]),
            symptoms_after=tuple(data["symptoms_after"]),
            final_loss=_optional_float(data.get("final_loss")),
            loss_ratio=_optional_float(data.get("loss_ratio")),
            seconds=float(data["seconds"]),
        )


def variant_row(
    remedies: Sequence[str], change: str, baseline: TrialRow | None, symptoms: Sequence[str], losses: Sequence[float], seconds: float
) -> TrialRow:
    """The row of a finished run; ``baseline`` None makes it the baseline row itself."""
    loss = final_loss(losses)
    before = tuple(symptoms) if baseline is None else baseline.symptoms_before
    base_loss = loss if baseline is None else baseline.final_loss
    ratio = loss / base_loss if loss is not None and base_loss else None
    return TrialRow(tuple(remedies), change, before, tuple(symptoms), loss, ratio, seconds)


@dataclass(frozen=True)
class NotApplicable:
    """A ranked remedy no variant could be built for, and why (never dropped silently)."""

    remedy: str
    reason: str


@dataclass
class TrialResult:
    """The baseline, one row per trained variant, and the remedies that could not be tried.

    ``ranked``: the remedy ids gradwatch ranked for the baseline's findings,
    in the order they were considered.
    """

    framework: str
    steps: int
    seed: int
    baseline: TrialRow
    rows: list[TrialRow] = field(default_factory=list)
    not_applicable: list[NotApplicable] = field(default_factory=list)
    ranked: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        """True when the baseline had nothing at warning level or above."""
        return not self.baseline.symptoms_after

    @property
    def nothing_to_try(self) -> bool:
        return not self.rows and not self.not_applicable

    def lowers_loss(self, row: TrialRow, min_gain: float = 0.0) -> bool:
        """True when ``row`` ends at least ``min_gain`` (a share) below the baseline's final loss.

        A finite final loss beats a diverged baseline.
        """
        if row.final_loss is None:
            return False
        base = self.baseline.final_loss
        if base is None:
            return True
        return row.final_loss < base if min_gain == 0.0 else row.final_loss <= base - min_gain * abs(base)

    def cures(self, row: TrialRow, *, min_gain: float = 0.3, symptoms: Iterable[str] | None = None) -> bool:
        """True when ``row`` clears ``symptoms`` (default: all of the baseline's) and lowers the loss by ``min_gain``."""
        return row.clears(symptoms) and self.lowers_loss(row, min_gain)

    @property
    def best(self) -> TrialRow | None:
        """The variant that clears most and ends lowest; None when no variant beats the baseline."""
        better = [
            row for row in self.rows
            if row.final_loss is not None
            and (len(row.symptoms_after) < len(self.baseline.symptoms_after)
                 or (len(row.symptoms_after) == len(self.baseline.symptoms_after) and self.lowers_loss(row)))
        ]  # fmt: skip
        if not better:
            return None
        return min(better, key=lambda row: (not self.cures(row, min_gain=0.0), len(row.symptoms_after), row.final_loss))

    @property
    def seconds(self) -> float:
        """Wall time of every run, the baseline included."""
        return self.baseline.seconds + sum(row.seconds for row in self.rows)

    @property
    def time_cost(self) -> float | None:
        """Total wall time in units of the baseline run."""
        return self.seconds / self.baseline.seconds if self.baseline.seconds > 0 else None

    def to_dict(self) -> dict[str, Any]:
        best = self.best
        return {
            "schema": TRIAL_SCHEMA,
            "framework": self.framework,
            "steps": self.steps,
            "seed": self.seed,
            "ranked": list(self.ranked),
            "baseline": self.baseline.to_dict(),
            "rows": [row.to_dict() for row in self.rows],
            "best": None if best is None else self.rows.index(best),
            "not_applicable": [{"remedy": n.remedy, "reason": n.reason} for n in self.not_applicable],
            "notes": list(self.notes),
        }

    def write_json(self, path: str | os.PathLike[str]) -> Path:
        """Write the trial atomically as JSON (schema ``gradwatch.trial/1``)."""
        return write_atomic(Path(path), json.dumps(self.to_dict(), indent=1, allow_nan=False))

    @classmethod
    def from_dict(cls, data: Any) -> TrialResult:
        if not isinstance(data, dict):
            raise SummaryError("not a gradwatch trial: the top level is not a JSON object")
        if data.get("schema") != TRIAL_SCHEMA:
            raise SummaryError(f"unsupported trial schema {data.get('schema')!r}: this gradwatch reads {TRIAL_SCHEMA!r}")
        try:
            return cls(
                framework=str(data["framework"]),
                steps=int(data["steps"]),
                seed=int(data["seed"]),
                baseline=TrialRow.from_dict(data["baseline"]),
                rows=[TrialRow.from_dict(row) for row in data["rows"]],
                not_applicable=[NotApplicable(str(n["remedy"]), str(n["reason"])) for n in data.get("not_applicable", [])],
                ranked=tuple(data.get("ranked", ())),
                notes=list(data.get("notes", [])),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SummaryError(f"malformed gradwatch trial: {type(exc).__name__}: {exc}") from None


def load_trial(path: str | os.PathLike[str]) -> TrialResult:
    """Read a trial file; every failure is a ``SummaryError`` with a one-line message."""
    try:
        return TrialResult.from_dict(read_json(path))
    except SummaryError as exc:
        message = str(exc)
        raise SummaryError(message if message.startswith(f"{path}:") else f"{path}: {message}") from None


def trial_schema_path() -> Path:
    """The JSON Schema of a trial file, shipped inside the package."""
    return Path(__file__).with_name("schema") / "trial-1.json"


def symptoms_of(report: Report) -> list[str]:
    """The report's symptoms at warning level or above."""
    return [finding.symptom for finding in report.findings if finding.at_least("warning")]


def ranked_remedies(report: Report, only: Iterable[str] | None = None) -> tuple[str, ...]:
    """Remedy ids for the warning-level findings: each finding's best first, interleaved, without repeats."""
    allowed = set(only) if only is not None else None
    lists = [[r.id for r in ranking.for_finding(f, report.facts)] for f in report.findings if f.at_least("warning")]
    ordered: dict[str, None] = {}
    for depth in range(max((len(ids) for ids in lists), default=0)):
        for ids in lists:
            if depth < len(ids) and (allowed is None or ids[depth] in allowed):
                ordered[ids[depth]] = None
    return tuple(ordered)


def combines(first: Sequence[str], second: Sequence[str]) -> bool:
    """Two variants combine when they share no remedy and do not move the learning rate both ways."""
    together = set(first) | set(second)
    return not set(first) & set(second) and not {"raise_lr", "lower_lr"} <= together


def combinations(singles: Sequence[Sequence[str]]) -> list[tuple[int, int]]:
    """Which single-remedy variants to combine (indices, best first).

    The top one with the next one it combines with; and every activation swap
    with ``matched_init``, since a new activation wants its own initialisation.
    """
    pairs: list[tuple[int, int]] = []
    partner = next((i for i in range(1, len(singles)) if singles and combines(singles[0], singles[i])), None)
    if partner is not None:
        pairs.append((0, partner))
    init = next((i for i, ids in enumerate(singles) if tuple(ids) == ("matched_init",)), None)
    for i, ids in enumerate(singles):
        pair = (min(i, init), max(i, init)) if init is not None else None
        if pair is not None and ids and ids[0] in ("relu_family", "leaky_relu") and pair not in pairs:
            pairs.append(pair)
    return pairs


def lr_raise_scales(report: Report) -> list[tuple[float, str]]:
    """Learning-rate factors for raise_lr, each with what it was sized on.

    A power of ten that brings layers to about 1e-3 of their norm per step:
    sized on the median layer, and (more cautious) on the fastest-moving one;
    x100 when the run recorded no update sizes.
    """
    median, fastest = layer_relative_updates(report)
    scales: dict[float, str] = {}
    for update, basis in ((median, "the median layer"), (fastest, "the fastest layer")):
        if update is not None and update > 0:
            scale = min(max(10.0 ** round(math.log10(TARGET_UPDATE / update)), LR_RAISE_RANGE[0]), LR_RAISE_RANGE[1])
            scales.setdefault(scale, f"sized on {basis}")
    return list(scales.items()) or [(100.0, "no update sizes recorded")]


def lr_lower_scales(report: Report) -> list[tuple[float, str]]:
    """Learning-rate factors for lower_lr: ×0.1, and where the first recorded steps moved layers by far more
    than 1e-3 of their norm, the power of ten that brings the median layer there (before a run blows up,
    its first samples still say how much too large each step was)."""
    scales = [(LOWER_LR, "the usual first step down")]
    first = layer_relative_updates(report, first=True)[0]
    if first is not None and first > 0:
        scale = min(max(10.0 ** round(math.log10(TARGET_UPDATE / first)), LR_LOWER_RANGE[0]), LR_LOWER_RANGE[1])
        if scale < LOWER_LR:
            scales.append((scale, "sized on the median layer's first steps"))
    return scales


def layer_relative_updates(report: Report, *, first: bool = False) -> tuple[float | None, float | None]:
    """Median and largest, over layers, of each layer's median ``|ΔW|/|W|`` in the recorded history.

    ``first``: each layer's first finite value instead of its median.
    """
    values = []
    for layer in report.layers:
        history = layer.get("history", {})
        pairs = zip(history.get("update_norm", []), history.get("weight_norm", []))
        ratios = [u / w for u, w in pairs if u is not None and w and u > 0 and math.isfinite(u / w)]
        if ratios:
            values.append(ratios[0] if first else statistics.median(ratios))
    if not values:
        return None, None
    return statistics.median(values), max(values)


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


__all__ = [
    "NOT_AUTOMATIC",
    "Planner",
    "Recipe",
    "TRIAL_SCHEMA",
    "NotApplicable",
    "TrialArgs",
    "TrialOptions",
    "TrialResult",
    "TrialRow",
    "combinations",
    "combines",
    "clipping_recipe",
    "final_loss",
    "load_trial",
    "lr_lower_scales",
    "lr_raise_scales",
    "lr_recipes",
    "plan",
    "plans",
    "run_trials",
    "ranked_remedies",
    "symptoms_of",
    "trial_schema_path",
    "variant_row",
]


def train_variants(
    planned: Sequence[Recipe],
    run: Callable[[Recipe, str], tuple[Report, Sequence[float], float]],
    baseline: TrialRow,
    *,
    max_variants: int,
    progress: Any,
) -> tuple[list[TrialRow], list[NotApplicable]]:
    """Train the first ``max_variants`` planned variants, one row each.

    The rest, and variants this model cannot train with, are listed as not tried
    with the reason, never dropped. ``run(variant, name)`` trains one and returns
    its report, per-step losses and seconds; ``progress`` has ``start`` and ``advance``.
    """
    skipped = [NotApplicable(" + ".join(v.remedies), f"not tried: beyond max_variants={max_variants}") for v in planned[max_variants:]]
    chosen = planned[:max_variants]
    progress.start("variants", total=1 + len(chosen))
    rows: list[TrialRow] = []
    for index, variant in enumerate(chosen, 1):
        label = " + ".join(variant.remedies)
        progress.start(label)
        try:
            report, losses, seconds = run(variant, f"variant-{index}")
        except Exception as exc:  # a variant this model cannot train with is reported, not raised
            skipped.append(NotApplicable(label, f"the variant failed to train: {error_line(exc)}"))
        else:
            rows.append(variant_row(variant.remedies, "; ".join(variant.words), baseline, symptoms_of(report), losses, seconds))
        progress.advance()
    return rows, skipped


@dataclass(frozen=True)
class TrialOptions:
    """What every framework's ``trial()`` takes besides the model and its data, declared once.

    ``seed`` starts every run; ``remedies`` limits the remedy ids tried;
    ``max_variants`` caps the runs after the baseline; ``every_n_steps``
    samples each run; ``print_report``: a progress bar and the table at the
    end; ``summary_dir`` keeps each run's JSON summary (for ``gradwatch compare``).
    """

    seed: int = 0
    remedies: Sequence[str] | None = None
    max_variants: int = 8
    every_n_steps: int = 20
    print_report: bool = True
    summary_dir: str | os.PathLike[str] | None = None

    def __post_init__(self) -> None:
        if self.max_variants < 0 or self.every_n_steps < 1:
            raise ValueError(f"max_variants must be >= 0 and every_n_steps >= 1, got {self.max_variants} and {self.every_n_steps}")


class TrialArgs(TypedDict, total=False):
    """``TrialOptions``' fields as keyword arguments (``**options: Unpack[TrialArgs]``); a test keeps the two alike."""

    seed: int
    remedies: Sequence[str] | None
    max_variants: int
    every_n_steps: int
    print_report: bool
    summary_dir: str | os.PathLike[str] | None


def run_trials(
    framework: str,
    steps: int,
    run: Callable[[Recipe, str], tuple[Report, Sequence[float], float]],
    plan_for: Callable[[Sequence[str], Report], tuple[list[Recipe], list[NotApplicable]]],
    options: TrialOptions,
    *,
    progress: Any,
) -> tuple[TrialResult, Report]:
    """A whole trial: the baseline, then the variants ``plan_for`` plans for the remedies its report ranks;
    the result and the baseline's report.

    ``run(recipe, name)`` trains one run and returns its report, per-step
    losses and seconds; ``progress`` has ``start`` and ``advance``.
    """
    report, losses, seconds = run(Recipe((), ("your model as built",)), "baseline")
    baseline = variant_row((), "your model as built", None, symptoms_of(report), losses, seconds)
    progress.advance()
    ranked = ranked_remedies(report, options.remedies)
    planned, skipped = plan_for(ranked, report)
    rows, not_tried = train_variants(planned, run, baseline, max_variants=options.max_variants, progress=progress)
    return TrialResult(framework, steps, options.seed, baseline, rows, skipped + not_tried, ranked=ranked), report


def error_line(exc: BaseException) -> str:
    """An exception as one short line, for the reason a variant was not tried."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
