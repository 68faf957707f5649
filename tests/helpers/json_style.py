"""The one JSON style of every bundle config: 4-space indents; an object or list whose values are scalars (or lists of
scalars) on one line when that line fits in 120 characters."""

from __future__ import annotations

import json
from typing import Any

WIDTH = 120


def _flat(value: Any) -> bool:
    return not isinstance(value, (dict, list)) or (
        isinstance(value, list) and all(not isinstance(x, (dict, list)) for x in value))


def canonical_json(obj: Any, level: int = 0, prefix: int = 0) -> str:
    """``obj`` written in the configs' style (without the final newline)."""
    pad, inner = " " * 4 * level, " " * 4 * (level + 1)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        if all(_flat(v) for v in obj.values()):
            line = "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)}: {json.dumps(v, ensure_ascii=False)}"
                                   for k, v in obj.items()) + "}"
            if prefix + len(line) + 1 <= WIDTH:
                return line
        items = []
        for k, v in obj.items():
            head = f"{inner}{json.dumps(k, ensure_ascii=False)}: "
            items.append(head + canonical_json(v, level + 1, len(head)))
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list):
        if not obj:
            return "[]"
        if all(not isinstance(x, (dict, list)) for x in obj):
            line = "[" + ", ".join(json.dumps(x, ensure_ascii=False) for x in obj) + "]"
            if prefix + len(line) + 1 <= WIDTH:
                return line
        return "[\n" + ",\n".join(inner + canonical_json(x, level + 1, len(inner)) for x in obj) + "\n" + pad + "]"
    return json.dumps(obj, ensure_ascii=False)


if __name__ == "__main__":  # python tests/helpers/json_style.py FILE...: rewrite files in the style
    import sys

    for name in sys.argv[1:]:
        with open(name) as f:
            text = canonical_json(json.load(f)) + "\n"
        with open(name, "w") as f:
            f.write(text)
