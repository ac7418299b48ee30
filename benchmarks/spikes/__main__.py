"""``python -m benchmarks.spikes``: run the loss-spike sweep and print the table (see ``benchmarks/spikes/__init__.py``)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .detectors import FORECAST_IDS
from .sweep import evaluate, grid, table, write_trace
from .train import load_trace, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.spikes", description="Loss spikes and divergence in tiny GPT-style models: gradwatch against two baselines."
    )
    parser.add_argument("--quick", action="store_true", help="a small subset (6 runs, about a minute)")
    parser.add_argument("--seeds", type=int, default=2, help="seeds per configuration (default 2)")
    parser.add_argument("--first-seed", type=int, default=0, help="first seed (default 0; another value gives held-out runs of the same grid)")
    parser.add_argument("--steps", type=int, default=400, help="training steps per run (default 400; warmup is half of them)")
    parser.add_argument("--limit", type=int, default=None, help="run only the first N configurations")
    parser.add_argument("--clip", type=float, default=0.0, help="clip the global gradient norm at this before every step (default 0: none)")
    parser.add_argument("--with-instant", action="store_true", help="also run the cells that blow up in their first steps")
    parser.add_argument("--ids", default=",".join(sorted(FORECAST_IDS)), help="gradwatch finding ids that count as its warning (comma-separated)")
    parser.add_argument("--from-traces", type=Path, default=None, metavar="DIR", help="tabulate runs saved by --save-traces instead of training")
    parser.add_argument("--json", type=Path, default=None, help="write the per-run rows and the summary here")
    parser.add_argument("--save-traces", type=Path, default=None, metavar="DIR", help="write each run's per-step traces to DIR/<run>.json")
    args = parser.parse_args(argv)
    configs = grid(seeds=args.seeds, steps=args.steps, quick=args.quick, with_instant=args.with_instant, first_seed=args.first_seed, clip=args.clip)
    if args.limit is not None:
        configs = configs[: args.limit]
    ids = frozenset(name.strip() for name in args.ids.split(",") if name.strip())
    started = time.perf_counter()
    results = []
    if args.from_traces is not None:
        results = [load_trace(path) for path in sorted(args.from_traces.glob("*.json")) if path.name != "index.json"]
        configs = []
    for index, config in enumerate(configs, 1):
        result = run(config)
        results.append(result)
        if args.save_traces is not None:
            write_trace(result, args.save_traces)
        verdict = result.verdict
        where = f" at step {verdict.step}" if verdict.step is not None else ""
        print(
            f"[{index}/{len(configs)}] {config.name}: {verdict.label}{where} ({result.steps_run} steps, {result.seconds:.1f}s, cpu {result.cpu_seconds:.1f}s)",
            file=sys.stderr,
            flush=True,
        )
    evaluation = evaluate(results, ids)
    evaluation["seconds"] = round(time.perf_counter() - started, 1)
    evaluation["cpu_seconds"] = round(sum(r.cpu_seconds for r in results), 1)
    evaluation["cpu_seconds_per_step"] = round(sum(r.cpu_seconds for r in results) / max(1, sum(r.steps_run for r in results)), 4)
    print(table(evaluation))
    print(f"\n{len(results)} runs in {evaluation['seconds']:.0f}s wall, {evaluation['cpu_seconds']:.0f}s CPU in training")
    if args.save_traces is not None and args.from_traces is None:
        index_rows = [{"run": row["run"], "oracle": row["oracle"], "file": f"{row['run']}.json"} for row in evaluation["rows"]]
        (args.save_traces / "index.json").write_text(json.dumps({"labels": evaluation["labels"], "runs": index_rows}, indent=1))
    if args.json is not None:
        args.json.write_text(json.dumps(evaluation, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
