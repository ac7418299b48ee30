"""A bounded, downsampled per-layer history of the sampled statistics.

Memory is O(series × capacity) whatever the run length: when the buffer is
full every other point is dropped and the sampling stride doubles.
"""

from __future__ import annotations

from typing import Any

from .stats import StepStats

LAYER_METRICS = ("grad_norm", "weight_norm", "update_norm", "zero_grad_rows")
ACTIVATION_METRICS = ("dead_share", "saturated_share")


class History:
    """Keeps at most ``capacity`` evenly spaced samples of every layer series."""

    def __init__(self, capacity: int = 128) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 2:
            raise ValueError(f"history capacity must be an integer >= 2, got {capacity!r}")
        self.capacity = capacity
        self.stride = 1
        self.seen = 0
        self.steps: list[int] = []
        self.kinds: dict[str, str] = {}
        self.series: dict[str, dict[str, list[float | None]]] = {}
        self.time_profiles: dict[str, list[float]] = {}  # latest per-time-step gradient of recurrent layers
        self._layouts: dict[tuple[tuple[str, ...], tuple[str, ...]], tuple[list[list[float | None]], list[int] | None]] = {}
        self._column_count = 0

    def add(self, sample: StepStats, layer_kinds: dict[str, str]) -> None:
        """Record ``sample`` if it falls on the current stride (time profiles: always the latest).

        ``layer_kinds``: the model's layer kinds by name (a layer may apply its own activation: its kind wins).
        """
        self.time_profiles.update({seq.name: list(seq.grad_by_step) for seq in sample.sequences})
        self.seen += 1
        if (self.seen - 1) % self.stride:
            return
        if len(self.steps) == self.capacity:
            self._halve()
        known = len(self.steps)
        layout = (tuple(layer.name for layer in sample.layers), tuple(a.name for a in sample.activations))
        if layout not in self._layouts:
            if len(self._layouts) >= 64:  # layouts that keep changing: forget the old ones
                self._layouts.clear()
            kinds = {a.name: a.kind for a in sample.activations} | layer_kinds
            self._layouts[layout] = self._columns(layout, kinds, known)
        columns, keep = self._layouts[layout]
        values = [getattr(layer, metric) for layer in sample.layers for metric in LAYER_METRICS]
        values += [getattr(a, metric) for a in sample.activations for metric in ACTIVATION_METRICS]
        for column, value in zip(columns, values if keep is None else [values[i] for i in keep]):
            column.append(value)
        self.steps.append(sample.step)
        if len(columns) < self._column_count:  # series not in this sample get a gap
            for series in self.series.values():
                for column in series.values():
                    if len(column) == known:
                        column.append(None)

    def _columns(
        self, layout: tuple[tuple[str, ...], tuple[str, ...]], kinds: dict[str, str], known: int
    ) -> tuple[list[list[float | None]], list[int] | None]:
        """The series the values of a sample with this layout go to, and which values (None: all, in order).

        A Keras layer is also its own activation; a name twice in a sample keeps its last value.
        """
        keys = [(name, metric) for name in layout[0] for metric in LAYER_METRICS]
        keys += [(name, metric) for name in layout[1] for metric in ACTIVATION_METRICS]
        last = {key: position for position, key in enumerate(keys)}
        keep = sorted(last.values())
        columns: list[list[float | None]] = []
        for name, metric in (keys[i] for i in keep):
            self.kinds.setdefault(name, kinds.get(name, "?"))
            series = self.series.setdefault(name, {})
            if metric not in series:
                series[metric] = [None] * known
                self._column_count += 1
            columns.append(series[metric])
        return columns, keep if len(keep) < len(keys) else None

    def _halve(self) -> None:
        self.steps = self.steps[::2]
        for series in self.series.values():
            for column in series.values():
                column[:] = column[::2]  # in place: the layouts keep pointing at it
        self.stride *= 2

    def to_layers(self) -> list[dict[str, Any]]:
        """The ``layers`` list of the JSON summary."""
        layers = []
        for name, series in self.series.items():
            entry: dict[str, Any] = {
                "name": name,
                "kind": self.kinds.get(name, "?"),
                "history": {"step": list(self.steps), **{m: list(v) for m, v in series.items() if any(x is not None for x in v)}},
            }
            if name in self.time_profiles:
                entry["time_profile"] = list(self.time_profiles[name])
            layers.append(entry)
        return layers

    def state_dict(self) -> dict[str, Any]:
        return {
            "capacity": self.capacity,
            "stride": self.stride,
            "seen": self.seen,
            "steps": list(self.steps),
            "kinds": dict(self.kinds),
            "series": {n: {m: list(v) for m, v in s.items()} for n, s in self.series.items()},
            "time_profiles": {n: list(v) for n, v in self.time_profiles.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.capacity = int(state["capacity"])
        self.stride = int(state["stride"])
        self.seen = int(state["seen"])
        self.steps = list(state["steps"])
        self.kinds = dict(state["kinds"])
        self.series = {n: {m: list(v) for m, v in s.items()} for n, s in state["series"].items()}
        self.time_profiles = {n: list(v) for n, v in state.get("time_profiles", {}).items()}
        self._layouts, self._column_count = {}, sum(len(s) for s in self.series.values())
