"""Untrusted summary text made safe to render: bounded nesting, strict JSON, the shipped schema.

Summaries travel (CI artifacts, issues, other machines), so the CLI reads
files it did not write. Every failure here is a one-line ``SummaryError``
naming the first offending field by its JSON path, e.g. ``$.findings[0].severity``.
"""

from __future__ import annotations

import json
import math
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

SCHEMA = "gradwatch.summary/1"
TRIAL_SCHEMA = "gradwatch.trial/1"
MAX_NESTING = 64  # brackets deep; a summary needs about 8
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_CHUNK = 1 << 20


class SummaryError(ValueError):
    """A summary file that cannot be read; the message is one line for the user."""


def schema_path() -> Path:
    """The JSON Schema of the summary, shipped inside the package (the trial file's lies beside it)."""
    return Path(__file__).with_name("schema") / "summary-1.json"


def parse(text: str) -> Any:
    """``text`` as JSON, refusing nesting deeper than ``MAX_NESTING`` and strings that are not Unicode."""
    depth = excess_nesting(text)
    if depth is not None:
        raise SummaryError(f"JSON nested {depth} levels deep; a summary is at most {MAX_NESTING} deep")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SummaryError(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:  # a backstop: excess_nesting() bounds the depth first
        raise SummaryError(f"JSON nested too deeply; a summary is at most {MAX_NESTING} deep") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise SummaryError(f"invalid JSON: {_one_line(str(exc))}") from None
    if _SURROGATE_ESCAPE.search(text):
        where = _unpaired_surrogate(data)
        if where is not None:
            raise SummaryError(f"invalid summary at {where}: a string holds an unpaired surrogate (not Unicode text)")
    return data


def excess_nesting(text: str) -> int | None:
    """How deep the brackets of JSON ``text`` nest when that is beyond ``MAX_NESTING``, else None.

    Found without parsing (a parser would recurse); brackets inside strings do not count.
    """
    if text.count("[") + text.count("{") <= MAX_NESTING:
        return None  # too few brackets to nest that deep: skip the scan
    import numpy as np  # here: a summary with few brackets, and every process that only imports gradwatch, skip it

    brackets = _STRING.sub('""', text).encode("utf-8").translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for start in range(0, len(brackets), _CHUNK):  # in chunks: memory stays small whatever the file
        codes = np.frombuffer(brackets, dtype=np.uint8, count=min(_CHUNK, len(brackets) - start), offset=start)
        running = depth + np.cumsum(np.where((codes == ord("[")) | (codes == ord("{")), 1, -1), dtype=np.int64)
        depth, deepest = int(running[-1]), max(deepest, int(running.max()))
    return deepest if deepest > MAX_NESTING else None


def validate(data: Any) -> None:
    """Raise ``SummaryError`` unless ``data`` is a summary the renderers can draw as it is."""
    if not isinstance(data, dict):
        raise SummaryError("not a gradwatch summary: the top level is not a JSON object")
    schema = data.get("schema")
    if schema != SCHEMA:
        raise SummaryError(f"unsupported summary schema {_show(schema)}: this gradwatch reads {_show(SCHEMA)}")
    error = next(_validator().iter_errors(data), None)  # the first in schema order; stops the work on a hostile file
    if error is not None:
        raise SummaryError(_explain(error))
    _check_histories(data["layers"])


@lru_cache(maxsize=1)
def _validator() -> Any:
    """The shipped schema's validator, with "number" meaning a finite number (the writer nulls NaN and inf)."""
    import jsonschema

    schema = json.loads(schema_path().read_text(encoding="utf-8"))
    base = jsonschema.validators.validator_for(schema)

    def finite_number(checker: Any, instance: Any) -> bool:
        if not base.TYPE_CHECKER.is_type(instance, "number"):
            return False
        return math.isfinite(instance) if isinstance(instance, float) else True

    checker = base.TYPE_CHECKER.redefine("number", finite_number)
    plain_items = base.VALIDATORS["items"]

    def items(validator: Any, subschema: Any, instance: Any, parent: Any) -> Any:
        if isinstance(instance, list) and _plainly_valid(subschema, instance):
            return  # a long series of numbers, steps or strings that certainly passes: skip item by item
        yield from plain_items(validator, subschema, instance, parent)

    plain_additional = base.VALIDATORS["additionalProperties"]

    def additional(validator: Any, subschema: Any, instance: Any, parent: Any) -> Any:
        if isinstance(instance, dict) and subschema == _SERIES_REF:
            named = parent.get("properties", {})
            extra = [value for key, value in instance.items() if key not in named]
            if all(isinstance(value, list) and _plainly_valid(_NUMBERS_OR_NULL, value) for value in extra):
                return  # the many series of a layer's history: skip one descent per series
        yield from plain_additional(validator, subschema, instance, parent)

    extended = jsonschema.validators.extend(base, {"items": items, "additionalProperties": additional}, type_checker=checker)
    return extended(schema)


_NUMBERS_OR_NULL = {"type": ["number", "null"]}
_STEPS = {"type": "integer", "minimum": 0}
_STRINGS = {"type": "string"}
_SERIES_REF = {"$ref": "#/$defs/series"}


def _plainly_valid(subschema: Any, values: list[Any]) -> bool:
    """A fast, conservative check of the item schemas of long arrays (False: validate item by item)."""
    if subschema == _NUMBERS_OR_NULL:
        return all(v is None or type(v) is int or (type(v) is float and math.isfinite(v)) for v in values)
    if subschema == _STEPS:
        return all(type(v) is int and v >= 0 for v in values)
    if subschema == _STRINGS:
        return all(type(v) is str for v in values)
    return False


def _explain(error: Any) -> str:
    """One line: the JSON path of the offending field and what was expected there."""
    where = json_path(error.absolute_path)
    kind, expected, value = error.validator, error.validator_value, error.instance
    if kind == "required":
        missing = next((name for name in expected if name not in value), expected[0])
        return f"invalid summary at {where}{_step(missing)}: required field is missing"
    if kind == "type":
        types = " or ".join(expected) if isinstance(expected, list) else expected
        return f"invalid summary at {where}: expected {types}, got {_show(value)}"
    if kind == "enum":
        return f"invalid summary at {where}: expected one of {', '.join(map(_show, expected))}, got {_show(value)}"
    if kind == "minimum":
        return f"invalid summary at {where}: expected a number >= {expected}, got {_show(value)}"
    if kind == "minLength":
        return f"invalid summary at {where}: must not be empty"
    if kind == "maxItems":
        return f"invalid summary at {where}: expected at most {expected} items, got {len(value)}"
    if kind == "maxProperties":
        return f"invalid summary at {where}: expected at most {expected} fields, got {len(value)}"
    return f"invalid summary at {where}: does not satisfy the schema's {kind!r} rule ({_show(expected)})"


def _check_histories(layers: list[dict[str, Any]]) -> None:
    """Every series has one value per sampled step, and every layer was sampled at the same steps."""
    first: tuple[int, list[int]] | None = None
    for index, layer in enumerate(layers):
        history = layer.get("history")
        if history is None:
            continue
        steps = history["step"]
        for metric, values in history.items():
            if len(values) != len(steps):
                where = json_path(["layers", index, "history", metric])
                raise SummaryError(f"invalid summary at {where}: {len(values)} values for {len(steps)} sampled steps")
        if first is None:
            first = index, steps
        elif steps != first[1]:
            where, other = json_path(["layers", index, "history", "step"]), json_path(["layers", first[0], "history", "step"])
            raise SummaryError(f"invalid summary at {where}: differs from {other} (every layer is sampled at the same steps)")


def _unpaired_surrogate(data: Any) -> str | None:
    """JSON path of the first string (or key) that cannot be encoded as UTF-8, if any."""
    stack: list[tuple[list[str | int], Any]] = [([], data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if not _is_unicode(value):
                return json_path(path)
        elif isinstance(value, dict):
            for key, item in reversed(list(value.items())):
                if not _is_unicode(key):
                    return json_path(path)
                stack.append(([*path, key], item))
        elif isinstance(value, list):
            stack.extend(([*path, index], item) for index, item in reversed(list(enumerate(value))))
    return None


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def json_path(parts: Any) -> str:
    """``$.findings[0].severity`` for the parts ``["findings", 0, "severity"]``."""
    return "$" + "".join(_step(part) for part in parts)


def _step(part: str | int) -> str:
    if isinstance(part, int):
        return f"[{part}]"
    if _IDENTIFIER.fullmatch(part):
        return f".{part}"
    return f"[{_show(part)}]"


def _show(value: Any) -> str:
    """A short, one-line, ASCII picture of a JSON value for an error message."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return f"an array of {len(value)}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{json.dumps(value)} (not a finite number)"
    try:
        text = json.dumps(value, ensure_ascii=True)
    except ValueError:  # an integer beyond Python's digit limit for str()
        return "a very large integer"
    return text if len(text) <= 60 else text[:57] + "..."


def _one_line(text: str) -> str:
    return " ".join(text.split())
