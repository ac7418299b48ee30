"""Keras 3: one callback in model.fit (KERAS_BACKEND=tensorflow by default; torch works too).

python examples/keras_mlp.py --epochs 5
"""

import argparse

import keras
import numpy as np

from gradwatch.integrations.keras import GradWatchCallback

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=5)
parser.add_argument("--summary", default="gradwatch-keras.json")
args = parser.parse_args()

rng = np.random.default_rng(0)
x = rng.normal(size=(2048, 16)).astype("float32")
y = (x[:, :4].sum(1) > 0).astype("int64")
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((16,))] + [keras.layers.Dense(64, activation="sigmoid") for _ in range(8)] + [keras.layers.Dense(2)])
model.compile(optimizer=keras.optimizers.SGD(0.1), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
model.fit(x, y, batch_size=64, epochs=args.epochs, verbose=0, callbacks=[GradWatchCallback(summary_path=args.summary)])
