"""Keras reads its backend once, at import: TensorFlow for this process (torch is tested in a subprocess)."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
