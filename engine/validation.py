"""pydantic's report on user data as one line that names the place and the problem.

Import files and the feedback store check their records with pydantic models; the user gets the
first problem, located in their own data ("messages[1].content must be a string, got int"), never
pydantic's multi-line report.
"""

from __future__ import annotations

from pydantic import BaseModel, ValidationError, model_validator
from pydantic_core import PydanticCustomError

_TYPE_NAMES = {"string_type": "a string", "list_type": "a list", "tuple_type": "a list", "dict_type": "an object",
               "model_type": "an object", "model_attributes_type": "an object", "bool_type": "true or false",
               "int_type": "a whole number", "float_type": "a number", "int_parsing": "a whole number",
               "float_parsing": "a number", "bool_parsing": "true or false"}
MISSING_KEYS = "keys"  # our own error type: an object lacks required keys


class InputObject(BaseModel):
    """A JSON object from the user: every required key present (else one message listing them),
    unknown keys ignored (files carry ids, tools, weights...). `model_config["title"]` names it."""

    @model_validator(mode="before")
    @classmethod
    def _required_keys(cls, data):
        if isinstance(data, dict):
            keys = [field.alias or name for name, field in cls.model_fields.items() if field.is_required()]
            if any(key not in data for key in keys):
                raise PydanticCustomError(MISSING_KEYS, "expected keys {expected} ({title}), found {found}", {
                    "expected": ", ".join(map(repr, keys)), "title": cls.model_config.get("title") or cls.__name__,
                    "found": ", ".join(map(repr, data)) or "none"})
        return data


def one_line(err: ValidationError, data, root: str = "", model: type[BaseModel] | None = None,
             expected: str = "") -> str:
    """The first (deepest) problem in `data`, as "<where> <what is wrong>".

    `root` names `data` itself ("messages"); without it, a top-level key is quoted ("'output'").
    What a value must be, when it fits none of its shapes, comes from `expected` for `data` itself
    and from the description of a top-level field of `model` ("'prompt' must be a string or a list
    of messages")."""
    located = [(_locate(problem, data), problem) for problem in err.errors()]
    # The union branch that got furthest, and at equal depth a broken rule over a mere wrong type.
    path, problem = max(located, key=lambda item: (len(item[0]), item[1]["type"] not in _TYPE_NAMES))
    where, value, kind = _render(path, root), problem["input"], problem["type"]
    if kind == MISSING_KEYS:
        return f"{where}: {problem['msg']}" if where else problem["msg"]
    got = f", got {type(value).__name__}" if kind in _TYPE_NAMES else ""
    field = model.model_fields.get(path[0]) if model is not None and path and isinstance(path[0], str) else None
    described = field.description if field is not None else expected
    if described and len(path) == (1 if field is not None else 0):
        return f"{where} must be {described}{got}"
    if kind in _TYPE_NAMES:
        return f"{where} must be {_TYPE_NAMES[kind]}{got}"
    if kind == "literal_error":
        return f"{where} must be one of {problem['ctx']['expected']}, got {value!r}"
    if field is not None and field.description:
        return f"{where}: '{path[0]}' must be {field.description}"
    message = problem["msg"][0].lower() + problem["msg"][1:]
    return f"{where}: {message}" if where else message


def _locate(problem: dict, data) -> tuple:
    """The error's place in the user's data: pydantic's union branch names, and the index of a
    missing tuple item, are not places in it and are dropped."""
    path, current = [], data
    for key in problem["loc"]:
        if isinstance(key, int) and isinstance(current, (list, tuple)) and 0 <= key < len(current) or \
                isinstance(key, str) and isinstance(current, dict) and key in current:
            path.append(key)
            current = current[key]
    return tuple(path)


def _render(path: tuple, root: str) -> str:
    if not root and len(path) == 1 and isinstance(path[0], str):
        return repr(path[0])
    text = root
    for key in path:
        text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else key)
    return text
