"""``python -m benchmarks.scale``: gradwatch on big models, and a million-step stream through the core.

For a 500-layer MLP and a ~100M-parameter MLP: the time of a plain training
step, the extra time of a sampled step (gradient/weight/update reads, one
transfer), the physical floor of a sampled step (one fused pass over the
gradients and one over the weights: ``torch._foreach_norm`` of both) and the
ratio of the extra time to it, and the peak memory a sampled step adds
(resident set, measured in a fresh process per configuration); ``--profile``
adds where the extra time goes. Timings run on one thread, plain and watched
steps in turn in one process (see ``_time``). Then 50,000 samples (a 1M-step
run sampled every 20 steps) through the core: time per sample and the size of
the history kept.

``--baseline DIR`` compares instead: the extra time and ratio of this checkout
and of another one (``git worktree add DIR REV``; its ``gradwatch/integrations``
linked to its ``integrations/``, as the editable install maps them), run after
run in turn, ``--pairs`` times per model.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any


def _model(config: str) -> tuple[Any, Any]:
    """The model of ``config`` and one input batch."""
    import torch
    from torch import nn

    width, depth, batch = (64, 500, 64) if config == "mlp500" else (3200, 10, 32)  # mlp100m: 10 × 3200²
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.ReLU()]
    return nn.Sequential(*layers), torch.randn(batch, width)


def _time(config: str, steps: int, profile: bool) -> dict[str, Any]:
    """Runs in a child process, on one thread: a watched and a plain copy of the model, stepped in turn.

    Each round times a plain step, the floor (one ``_foreach_norm`` pass over
    the plain model's gradients and one over its weights, warm, as a sampled
    step would find them at best) and a watched step; ratios come from the
    medians of the per-round differences, so that a machine whose speed drifts
    slows both sides alike. ``profile``: also the time of each part of the
    sampled step (collector, session), per step.
    """
    import copy

    import torch

    from gradwatch.integrations import torch_probes, torch_stats
    from gradwatch.integrations.pytorch import watch
    from gradwatch.session import Session

    torch.set_num_threads(1)
    torch.manual_seed(0)
    plain, x = _model(config)
    watched = copy.deepcopy(plain)
    optimizers = {id(m): torch.optim.SGD(m.parameters(), lr=1e-4) for m in (plain, watched)}
    watcher = watch(watched, optimizers[id(watched)], every_n_steps=1, print_report=False, warn_on=None)
    parts: dict[str, float] = {}
    if profile:
        for owner, names in (
            (torch_probes.ForwardProbes, ("_hold", "_record_activation", "_reduce_held")),
            (torch_stats.TorchCollector, ("_read_gradients", "capture_gradients", "_unit_spread", "capture_updates", "pack", "unpack")),
            (Session, ("observe",)),
        ):
            for name in names:
                setattr(owner, name, _timed(getattr(owner, name), name, parts))

    def step(model: Any) -> None:
        optimizer = optimizers[id(model)]
        loss = model(x).square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if model is watched:
            watcher.step(loss)

    def floor() -> None:
        with torch.no_grad():
            torch.stack(torch._foreach_norm([p.grad for p in plain.parameters()])).sum().item()
            torch.stack(torch._foreach_norm(list(plain.parameters()))).sum().item()

    rounds: list[tuple[float, float, float]] = []  # plain step, floor, watched step
    for i in range(steps + 2):  # two warm-up rounds
        if i == 2:
            parts.clear()
        start = time.perf_counter()
        step(plain)
        plain_end = time.perf_counter()
        floor()  # warm-up: the floor at its best, with the data in cache
        floor_start = time.perf_counter()
        floor()
        floor_end = time.perf_counter()
        step(watched)
        if i >= 2:
            rounds.append((plain_end - start, floor_end - floor_start, time.perf_counter() - floor_end))
    return {
        "params": sum(p.numel() for p in plain.parameters()),
        "plain": statistics.median(r[0] for r in rounds),
        "floor": statistics.median(r[1] for r in rounds),
        "watched": statistics.median(r[2] for r in rounds),
        "extra": statistics.median(r[2] - r[0] for r in rounds),
        "parts": {name: seconds / steps for name, seconds in parts.items()},
    }


def _time_keras(steps: int, profile: bool) -> dict[str, Any]:
    """Runs in a child process, on one thread: the Keras (TensorFlow) 6×1024 MLP, plain and watched.

    Rounds of 5 batches of ``fit`` alternate between a plain and a watched copy
    (every batch sampled); the floor is ``tf.linalg.global_norm`` of the
    gradients and of the weights (the fused pass Keras itself uses for
    ``global_clipnorm``), warm, in every round. ``profile``: also the time of
    the callback's host work per sampled batch (reading the previous sampled
    step, the weight snapshot, the loss tracker); the rest of the extra time is
    the sampled branch inside the compiled step.
    """
    import os

    os.environ["KERAS_BACKEND"] = "tensorflow"
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras
    import numpy as np

    from gradwatch.integrations import keras_stats
    from gradwatch.integrations.keras import GradWatchCallback

    keras.utils.set_random_seed(0)
    batch, per_round = 256, 5
    x = np.random.default_rng(0).normal(size=(batch * per_round, 784)).astype("float32")
    y = np.random.default_rng(1).integers(0, 10, size=batch * per_round)

    def build() -> Any:
        model = keras.Sequential([keras.Input((784,)), *(keras.layers.Dense(1024, activation="relu") for _ in range(6)), keras.layers.Dense(10)])
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return model

    class Clock(keras.callbacks.Callback):
        """Placed first and last among the callbacks: a batch from the first one's begin to the last one's end."""

        def __init__(self) -> None:
            super().__init__()
            self.times: list[float] = []
            self.kept: list[float] = []
            self.start = 0.0
            self.last = self.Stop(self)

        class Stop(keras.callbacks.Callback):
            def __init__(self, clock: Any) -> None:
                super().__init__()
                self.clock = clock

            def on_train_batch_end(self, index: int, logs: object = None) -> None:
                self.clock.times.append(time.perf_counter() - self.clock.start)

        def on_train_batch_begin(self, index: int, logs: object = None) -> None:
            self.start = time.perf_counter()

    parts: dict[str, float] = {}
    if profile:
        for owner, names in (
            (GradWatchCallback, ("on_train_batch_begin",)),
            (keras_stats.KerasCollector, ("read", "snapshot")),
            (keras_stats, ("_loss_totals",)),
        ):
            for name in names:
                setattr(owner, name, _timed(getattr(owner, name), name, parts))
    plain, watched = build(), build()
    watcher = GradWatchCallback(every_n_steps=1, print_report=False, warn_on=None)
    clocks = {"plain": Clock(), "watched": Clock()}
    with tf.GradientTape() as tape:
        loss = plain.compute_loss(x=x[:batch], y=y[:batch], y_pred=plain(x[:batch], training=True))
    grads = tape.gradient(loss, plain.trainable_variables)
    floor: list[float] = []
    rounds = -(-steps // per_round) + 1
    for i in range(rounds):
        for name, model in (("plain", plain), ("watched", watched)):
            clocks[name].times = []
            extra = [watcher] if name == "watched" else []
            clock = clocks[name]
            model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False, callbacks=[clock, *extra, clock.last])
            if i:  # the first round warms up
                clock.kept.extend(clock.times[1:])
            elif name == "watched":
                parts.clear()
        for _ in range(per_round):  # the floor in every round too, so that it drifts with the machine
            tf.linalg.global_norm(grads).numpy(), tf.linalg.global_norm(plain.trainable_variables).numpy()
            start = time.perf_counter()
            tf.linalg.global_norm(grads).numpy(), tf.linalg.global_norm(plain.trainable_variables).numpy()
            if i:
                floor.append(time.perf_counter() - start)
    plain_s, watched_s = (statistics.median(clocks[name].kept) for name in ("plain", "watched"))
    return {
        "params": sum(int(np.prod(v.shape)) for v in plain.trainable_variables),
        "plain": plain_s,
        "watched": watched_s,
        "extra": watched_s - plain_s,
        "floor": statistics.median(floor),
        "parts": {name: seconds / ((rounds - 1) * per_round) for name, seconds in parts.items()},
    }


def _timed(fn: Any, name: str, parts: dict[str, float]) -> Any:
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            parts[name] = parts.get(name, 0.0) + time.perf_counter() - start

    return timed


def _peak_rss(config: str, watched: bool) -> dict[str, float]:
    """Runs in a child process: the peak resident set of a few steps, watched or not."""
    import torch

    from gradwatch.integrations.pytorch import watch

    torch.manual_seed(0)
    model, x = _model(config)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
    watcher = watch(model, optimizer, every_n_steps=1, print_report=False, warn_on=None) if watched else None
    for _ in range(4):
        loss = model(x).square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if watcher is not None:
            watcher.step(loss)
    return {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def stream(samples: int = 50_000, layers: int = 10) -> dict[str, float]:
    """Feed ``samples`` synthetic samples through a Session; report time per sample and history size."""
    import tracemalloc

    from gradwatch import LayerStats, Session, StepStats

    session = Session(warn_on=None, every_n_steps=20)
    tracemalloc.start()
    start = time.perf_counter()
    for i in range(samples):
        stats = tuple(LayerStats(f"l{k}", 0.01 * (k + 1), 1.0, 1e-3, 0.0) for k in range(layers))
        session.observe(StepStats(i * 20, stats, loss=1.0 / (1 + i), lr=0.1))
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "us_per_sample": 1e6 * elapsed / samples,
        "history_points": len(session.history.steps),
        "peak_kb": peak / 1024,
        "summary_kb": len(json.dumps(session.report().to_summary())) / 1024,
    }


def _child(*args: str, code: str | None = None) -> dict[str, Any]:
    """``benchmarks.scale --child ARGS`` in a fresh process, with this checkout's code or that of ``code``
    (run from it: ``-m`` puts the working directory ahead of ``PYTHONPATH``)."""
    env = None if code is None else {**os.environ, "PYTHONPATH": code}
    command = [sys.executable, "-m", "benchmarks.scale", "--child", *args]
    out = subprocess.run(command, capture_output=True, text=True, check=True, cwd=code, env=env)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def compare(baseline: str, models: list[str], steps: int, pairs: int) -> None:
    """Extra ms per sampled step and extra / floor of the checkout ``baseline`` and of this one, alternated."""
    if not os.path.isdir(os.path.join(baseline, "gradwatch", "integrations")):
        sys.exit(f"--baseline {baseline}: no gradwatch/integrations there (ln -s ../integrations {baseline}/gradwatch/integrations)")
    print(f"{'model':<10} {'code':<10} {'extra ms per run':<28} {'extra / floor per run':<24} {'median extra / floor':>20}")
    for config in models:
        runs: dict[str, list[dict[str, Any]]] = {"baseline": [], "this": []}
        for _ in range(pairs):
            for name, code in (("baseline", baseline), ("this", None)):
                runs[name].append(_child("time", config, str(steps), "0", code=code))
        for name, timings in runs.items():
            extra = [1e3 * t["extra"] for t in timings]
            ratios = [t["extra"] / t["floor"] for t in timings]
            print(
                f"{config:<10} {name:<10} {', '.join(f'{e:.1f}' for e in extra):<28} "
                f"{', '.join(f'{r:.2f}' for r in ratios):<24} {statistics.median(ratios):>20.2f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--models", nargs="+", default=["mlp500", "mlp100m", "keras_mlp"], choices=["mlp500", "mlp100m", "keras_mlp"])
    parser.add_argument("--steps", type=int, default=30, help="timed rounds per model (default 30)")
    parser.add_argument("--profile", action="store_true", help="also print where a sampled step's extra time goes")
    parser.add_argument("--baseline", metavar="DIR", help="compare with the code of another checkout, run after run (see above)")
    parser.add_argument("--pairs", type=int, default=3, help="runs of each checkout per model with --baseline (default 3)")
    args = parser.parse_args()
    if args.child:
        kind, config, *rest = args.child
        if kind == "rss":
            result = _peak_rss(config, rest[0] == "watched")
        else:
            result = _time_keras(int(rest[0]), rest[1] == "1") if config == "keras_mlp" else _time(config, int(rest[0]), rest[1] == "1")
        print(json.dumps(result))
        return
    if args.baseline:
        compare(os.path.abspath(args.baseline), args.models, args.steps, args.pairs)
        return
    print(
        f"{'model':<10} {'params':>12} {'plain s/step':>13} {'sampled s/step':>15} {'extra s':>8} {'floor s':>8} "
        f"{'extra/floor':>11} {'peak RSS MB plain':>18} {'added MB':>9}"
    )
    profiles = {}
    for config in args.models:
        timing = _child("time", config, str(args.steps), "1" if args.profile else "0")
        plain, watched = (
            (_child("rss", config, mode)["peak_rss_mb"] for mode in ("plain", "watched")) if config != "keras_mlp" else (float("nan"),) * 2
        )
        profiles[config] = timing["parts"]
        print(
            f"{config:<10} {timing['params']:>12,} {timing['plain']:>13.4f} {timing['watched']:>15.4f} {timing['extra']:>8.4f} "
            f"{timing['floor']:>8.4f} {timing['extra'] / timing['floor']:>11.1f} {plain:>18.0f} {watched - plain:>9.0f}"
        )
    for config, parts in profiles.items():
        if parts:
            print(f"\n{config}: ms per sampled step in " + ", ".join(f"{name} {1e3 * s:.2f}" for name, s in parts.items()))
    result = stream()
    print(
        f"\n1M-step run (50,000 samples, 10 layers) through the core: {result['us_per_sample']:.0f} µs per sample, "
        f"{result['history_points']} history points kept, peak {result['peak_kb']:.0f} KiB traced, summary {result['summary_kb']:.0f} KiB"
    )


if __name__ == "__main__":
    main()
