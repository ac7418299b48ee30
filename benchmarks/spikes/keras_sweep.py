"""``python -m benchmarks.spikes.keras_sweep``: the spike sweep's model and grid on Keras 3 (TensorFlow backend).

The same character-level GPT as ``model.py`` (pre-LN blocks, Keras's own ``MultiHeadAttention``, std-0.02
initialisation with the residual outputs scaled down by depth), the same corpus and batches, Adam with a
linear warmup, trained by ``Model.fit`` with gradwatch's ``GradWatchCallback`` at its defaults. The oracle
labels each run from its per-step loss, as in the PyTorch sweep.

A Keras callback sees no gradients, so gradwatch's forecast has the signs that need only the sampled steps:
the learning rate past the one the run trained best at, Adam's moments and the per-layer jumps. The baselines
are fed in the same run: the ZClip-style z-score reads each step's global gradient norm from an ``Adam`` that
records it (a benchmark-side subclass), Lightning's ``SpikeDetection`` reads each step's loss.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import torch  # noqa: E402

from . import oracle  # noqa: E402
from .corpus import VOCAB, batches, corpus  # noqa: E402
from .detectors import (  # noqa: E402
    FORECAST_IDS,
    LIGHTNING_DEFAULT_RTOL,
    LIGHTNING_RTOLS,
    ZCLIP_CLIP,
    GradwatchFindings,
    LightningSpikes,
    ZScoreRule,
    first_above,
)
from .sweep import calibrate, judge, summarise, table  # noqa: E402
from .train import STOP_PATIENCE  # noqa: E402

STEPS, WARMUP = 400, 200
# (peak learning rate, warmup steps): here runs diverge once the rate passes about 0.4; with warmup 0.9 turns
# near step 100, 0.6 near 140, 0.3 is the edge; 1.5 diverges by step 80, too soon to be warned 20 steps ahead.
CELLS = ((0.003, 0), (0.03, 0), (0.03, WARMUP), (0.3, WARMUP), (0.6, WARMUP), (0.9, WARMUP))
EPSILONS = (1e-8, 1e-4)


@dataclass(frozen=True)
class KerasRun:
    lr: float
    warmup: int
    eps: float
    seed: int
    steps: int = STEPS
    width: int = 64
    layers: int = 2
    heads: int = 4
    context: int = 64
    batch: int = 8

    @property
    def name(self) -> str:
        return f"keras-lr{self.lr:g}-wu{self.warmup}-eps{self.eps:.0e}-s{self.seed}"


def build(run: KerasRun) -> tuple[Any, Any]:
    """The model and an ``Adam`` that keeps the global norm of the gradients it last applied."""
    import keras
    from keras import layers, ops

    normal = keras.initializers.RandomNormal(stddev=0.02)
    residual = keras.initializers.RandomNormal(stddev=0.02 / math.sqrt(2 * run.layers))

    class Positions(layers.Layer):
        def build(self, shape: Any) -> None:
            self.table = self.add_weight(shape=(run.context, run.width), initializer=normal, name="table")

        def call(self, x: Any) -> Any:
            return x + self.table[: ops.shape(x)[1]]

    tokens = keras.Input((run.context,), dtype="int32")
    x = Positions(name="position")(layers.Embedding(VOCAB, run.width, embeddings_initializer=normal, name="token")(tokens))
    for i in range(run.layers):
        h = layers.LayerNormalization(name=f"ln_attn{i}")(x)
        attention = layers.MultiHeadAttention(run.heads, run.width // run.heads, kernel_initializer=normal, name=f"attn{i}")
        x = x + attention(h, h, use_causal_mask=True)
        h = layers.Dense(4 * run.width, activation="gelu", kernel_initializer=normal, name=f"mlp_in{i}")(
            layers.LayerNormalization(name=f"ln_mlp{i}")(x)
        )
        x = x + layers.Dense(run.width, kernel_initializer=residual, name=f"mlp_out{i}")(h)
    logits = layers.Dense(VOCAB, use_bias=False, kernel_initializer=normal, name="head")(layers.LayerNormalization(name="ln_out")(x))
    model = keras.Model(tokens, logits)

    class NormRecordingAdam(keras.optimizers.Adam):
        """Adam that stores the global norm of each step's gradients (read by the ZClip-style baseline)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.last_norm = keras.Variable(0.0, trainable=False, name="last_norm")

        def apply(self, grads: Any, trainable_variables: Any = None) -> Any:
            squares = [ops.sum(ops.square(ops.cast(g, "float32"))) for g in grads if g is not None]
            self.last_norm.assign(ops.sqrt(ops.sum(ops.stack(squares))))
            return super().apply(grads, trainable_variables)

    class Warmup(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step: Any) -> Any:
            if not run.warmup:
                return ops.convert_to_tensor(run.lr, "float32")
            return run.lr * ops.minimum(1.0, (ops.cast(step, "float32") + 1.0) / run.warmup)

        def get_config(self) -> dict[str, Any]:
            return {}

    optimizer = NormRecordingAdam(Warmup(), beta_2=0.95, epsilon=run.eps)
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model, optimizer


def train(run: KerasRun) -> dict[str, Any]:
    """Train one run under gradwatch; every detector's warning step and the oracle's verdict."""
    import keras

    from gradwatch.integrations.keras import GradWatchCallback

    keras.utils.set_random_seed(run.seed)
    torch.manual_seed(run.seed)
    generator = torch.Generator().manual_seed(run.seed)
    data = corpus()
    windows = [batches(data, run.batch, run.context, generator) for _ in range(run.steps)]
    x = torch.cat([w for w, _ in windows]).numpy().astype("int32")
    y = torch.cat([t for _, t in windows]).numpy().astype("int32")
    model, optimizer = build(run)
    gradwatch = GradWatchCallback(print_report=False, warn_on=None)
    found = GradwatchFindings()
    zscore, lightning = ZScoreRule(), LightningSpikes()
    losses: list[float] = []
    z: list[float] = []

    class Feed(keras.callbacks.Callback):
        """After each step: its loss (Keras logs the epoch's running mean), its gradient norm, new findings."""

        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            mean = float((logs or {})["loss"])
            loss = mean if batch == 0 else (batch + 1) * mean - batch * self.previous
            self.previous = mean
            losses.append(loss if math.isfinite(mean) else math.nan)
            z.append(zscore.update(float(optimizer.last_norm.numpy())))
            lightning.update(torch.tensor(losses[-1]), batch)
            for name in gradwatch.session.findings:
                found.raised_step.setdefault(name, batch)
            if oracle.diverged_for_good(losses, STOP_PATIENCE):
                self.model.stop_training = True

    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(x, y, batch_size=run.batch, epochs=1, shuffle=False, verbose=0, callbacks=[gradwatch, Feed()])
    seconds = time.perf_counter() - started
    for finding in gradwatch.report.findings if gradwatch.report else ():
        found.first_step[finding.symptom] = finding.first_step
        found.severity[finding.symptom] = finding.severity
        found.raised_step.setdefault(finding.symptom, finding.first_step)
    lightning.close()
    verdict = oracle.label(losses)
    return {
        "run": run.name,
        "config": asdict(run),
        "oracle": verdict.to_dict(),
        "steps_run": len(losses),
        "seconds": round(seconds, 1),
        "gradwatch": found.to_dict(),
        "forecast_step": found.warning(FORECAST_IDS)[1],
        "forecast_signs": sorted(
            {str(s.get("mechanism")) for f in (gradwatch.report.findings if gradwatch.report else ()) for s in f.evidence.get("signs", ())}
        ),
        "lightning": {f"{rtol:g}": lightning.first_flag(rtol) for rtol in LIGHTNING_RTOLS},
        "zscore_max": max((v for v in z if not math.isnan(v)), default=-math.inf),
        "zscore": z,
        "loss": [round(v, 4) for v in losses],
    }


def evaluate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Each detector's warning per run, judged as in the PyTorch sweep (``sweep.table`` prints it): gradwatch, and
    both baselines at their defaults and at gradwatch's false-alarm rate on the stable runs."""
    stable = [r for r in rows if r["oracle"]["label"] == oracle.STABLE]
    rate = sum(r["forecast_step"] is not None for r in stable) / max(1, len(stable))
    z_cal = calibrate([r["zscore_max"] for r in stable], rate)
    rtol_cal = next((t for t in LIGHTNING_RTOLS if sum(r["lightning"][f"{t:g}"] is not None for r in stable) <= rate * len(stable) + 1e-9), None)
    zclip = {f"zclip z>{ZCLIP_CLIP:g}": ZCLIP_CLIP} | ({f"zclip z>{z_cal:.3g} (same FA)": z_cal} if math.isfinite(z_cal) else {})
    rtols = {f"lightning rtol={LIGHTNING_DEFAULT_RTOL:g}": LIGHTNING_DEFAULT_RTOL}
    if rtol_cal is not None and rtol_cal != LIGHTNING_DEFAULT_RTOL:
        rtols[f"lightning rtol={rtol_cal:g} (same FA)"] = rtol_cal
    for row in rows:
        verdict = oracle.Verdict(row["oracle"]["label"], row["oracle"]["step"])
        steps = {"gradwatch": row["forecast_step"]}
        steps |= {column: first_above(row["zscore"], threshold) for column, threshold in zclip.items()}
        steps |= {column: row["lightning"][f"{rtol:g}"] for column, rtol in rtols.items()}
        row["warnings"] = {column: asdict(judge(step, verdict)) for column, step in steps.items()}
    columns = list(rows[0]["warnings"]) if rows else []
    labels = {name: sum(r["oracle"]["label"] == name for r in rows) for name in (oracle.DIVERGED, oracle.SPIKED, oracle.STABLE)}
    summary = {column: summarise(column, rows) for column in columns}
    return {"forecast_ids": sorted(FORECAST_IDS), "labels": labels, "columns": columns, "rows": rows, "summary": summary, "threshold_sweeps": {}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.spikes.keras_sweep", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--lrs", default=None, help="peak,warmup pairs 'lr:warmup,...' instead of the default cells")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    cells = [(float(a), int(b)) for a, b in (pair.split(":") for pair in args.lrs.split(","))] if args.lrs else CELLS
    runs = [
        KerasRun(lr, warmup, eps, seed) for seed in range(args.first_seed, args.first_seed + args.seeds) for lr, warmup in cells for eps in EPSILONS
    ]
    rows = []
    for index, run in enumerate(runs, 1):
        row = train(run)
        rows.append(row)
        print(
            f"[{index}/{len(runs)}] {run.name}: {row['oracle']['label']} {row['oracle']['step'] or ''} ({row['seconds']}s)",
            file=sys.stderr,
            flush=True,
        )
    evaluation = evaluate(rows)
    print(table(evaluation))
    for row in rows:
        print(f"{row['run']}: gradwatch signs {', '.join(row['forecast_signs']) or '-'}")
    if args.json is not None:
        args.json.write_text(json.dumps(evaluation, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
