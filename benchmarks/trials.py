"""``python -m benchmarks.trials``: remedy trials over the sick clinic cases.

For each sick case, ``trial()`` trains the baseline and every variant
gradwatch can build for it, with the case's own steps, data and seed. A case
is **cured** when some variant clears every required symptom (the case's
label) and ends with a final loss (median of the last 10% of steps) at least
30% below the baseline's; **cured cleanly** when that variant also shows no
symptom the baseline did not. The time cost is the whole trial's wall time
over the baseline run's. CPU heavy: a few minutes on two cores.

    python -m benchmarks.trials [--framework torch|keras|all] [--json out.json] [NAME ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from gradwatch.trial import TrialResult, TrialRow

MIN_GAIN = 0.3


@dataclass(frozen=True)
class Outcome:
    case: str
    framework: str
    required: str
    baseline: list[str]
    runs: int
    cured: bool
    cured_cleanly: bool
    curing: list[str]  # the variants that cure, best first
    best_ratio: float | None
    seconds: float
    cost: float | None


def judge(name: str, framework: str, required: str, result: TrialResult) -> Outcome:
    def cures(row: TrialRow) -> bool:
        return required not in row.symptoms_after and result.lowers_loss(row, MIN_GAIN)

    curing = sorted((row for row in result.rows if cures(row)), key=lambda row: (bool(row.new), row.final_loss))
    ratios = [row.loss_ratio for row in result.rows if row.loss_ratio is not None]
    return Outcome(
        case=name,
        framework=framework,
        required=required,
        baseline=list(result.baseline.symptoms_after),
        runs=1 + len(result.rows),
        cured=bool(curing),
        cured_cleanly=any(not row.new for row in curing),
        curing=[row.label for row in curing],
        best_ratio=min(ratios) if ratios else None,
        seconds=result.seconds,
        cost=result.time_cost,
    )


def torch_outcomes(names: list[str]) -> list[Outcome]:
    import torch

    from gradwatch.integrations.pytorch import trial

    from .clinic import torch_cases

    torch.set_num_threads(1)
    expected = {case.name: case.expected for case in torch_cases.CASES}
    warm = torch_cases.SICK["tiny_lr"]  # one short trial first, so no case pays the process warm-up
    trial(warm.make_model, warm.make_optimizer, warm.batches()[:20], warm.loss_fn, 20, print_report=False)
    outcomes = []
    for name, setup in torch_cases.SICK.items():
        if names and name not in names:
            continue
        result = trial(setup.make_model, setup.make_optimizer, setup.batches(), setup.loss_fn, setup.steps, print_report=False)
        outcomes.append(_report(judge(name, "pytorch", str(expected[name]), result)))
    return outcomes


def keras_outcomes(names: list[str]) -> list[Outcome]:
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # as the Keras clinic cases do
    import tensorflow as tf

    from gradwatch.integrations.keras import trial

    from .clinic import keras_cases

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    outcomes = []
    for case in keras_cases.CASES:
        setup = case.run
        if case.expected is None or (names and case.name not in names) or not isinstance(setup, keras_cases.Setup):
            continue
        x, y = setup.samples()
        result = trial(setup.compiled, x, y, epochs=setup.epochs, batch_size=keras_cases.BATCH, print_report=False)
        outcomes.append(_report(judge(case.name, "keras", case.expected, result)))
    return outcomes


def _report(outcome: Outcome) -> Outcome:
    cure = outcome.curing[0] if outcome.curing else "-"
    print(
        f"{outcome.case:<24} {outcome.required:<20} {'CURED' if outcome.cured else 'not cured':<10} by {cure:<34} "
        f"runs {outcome.runs:>2}  {outcome.seconds:6.1f} s  ×{outcome.cost or 0:.1f}",
        flush=True,
    )
    return outcome


def summary(outcomes: list[Outcome]) -> str:
    cured = [o for o in outcomes if o.cured]
    clean = [o for o in outcomes if o.cured_cleanly]
    costs = [o.cost for o in outcomes if o.cost is not None]
    lines = [
        f"cured: {len(cured)}/{len(outcomes)} ({len(cured) / max(len(outcomes), 1):.0%}); cleanly (no new symptom): {len(clean)}/{len(outcomes)}",
        f"time cost (trial / baseline run): median ×{statistics.median(costs):.1f}, max ×{max(costs):.1f}" if costs else "",
        f"not cured: {', '.join(o.case for o in outcomes if not o.cured) or '-'}",
    ]
    return "\n".join(line for line in lines if line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="run only these cases")
    parser.add_argument("--framework", choices=["torch", "keras", "all"], default="all")
    parser.add_argument("--json", help="write every outcome to this file")
    args = parser.parse_args()
    runners: list[Callable[[list[str]], list[Outcome]]] = []
    if args.framework in ("torch", "all"):
        runners.append(torch_outcomes)
    if args.framework in ("keras", "all"):
        runners.append(keras_outcomes)
    start = time.perf_counter()
    outcomes = [outcome for runner in runners for outcome in runner(args.names)]
    print()
    print(summary(outcomes))
    print(f"wall time: {time.perf_counter() - start:.0f} s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump([asdict(o) for o in outcomes], handle, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
