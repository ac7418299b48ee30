"""placeholder"""
from typing import Any
PROGRAMS: dict[str, Any] = {}
CASES: list[Any] = []
def oracle_of(program: Any) -> dict[str, Any]:
    raise NotImplementedError
