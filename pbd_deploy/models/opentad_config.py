"""Read an OpenTAD config file without executing it.

OpenTAD configs are Python files of assignments (`model = dict(...)`, `window_size = 768`)
with a `_base_` list of other config files merged underneath, mmengine-style. We parse them
with `ast` and evaluate only literals, `dict(...)`, `list(range(n))`, arithmetic and names
assigned earlier; anything else (f-strings, function calls) becomes `UNKNOWN`, so a config
can never run code on the user's machine.
"""

from __future__ import annotations

import ast
import json
import operator
from importlib import resources
from pathlib import Path

from pbd_deploy.errors import PbdError

UNKNOWN = object()  # an expression we do not evaluate

_BINOPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}


def read_opentad_config(path: str | Path) -> dict:
    """The merged top-level variables of an OpenTAD config and its `_base_` chain."""
    return _read(Path(path), seen=())


def preset_names() -> list[str]:
    """Names of the published OpenTAD configs shipped as presets (opentad_presets.json)."""
    return sorted(_presets())


def opentad_preset(name: str) -> dict:
    """A published OpenTAD config's model / input / post-processing / evaluation sections.

    tests/fixtures/opentad/make_presets.py wrote them from OpenTAD's config files with
    mmengine's own reader, so `--preset NAME` reads what `--opentad-config FILE` would.
    """
    presets = _presets()
    if name not in presets:
        raise PbdError(
            f"unknown OpenTAD preset {name!r}; choose one of {', '.join(sorted(presets))}"
        )
    return presets[name]["config"]


def opentad_settings(config_path: str | Path | None, preset: str | None) -> tuple[dict, str]:
    """(settings, where they came from) for `--opentad-config FILE` or `--preset NAME`."""
    if config_path and preset:
        raise PbdError("give --opentad-config or --preset, not both")
    if preset:
        return opentad_preset(preset), f"preset {preset}"
    if config_path:
        return read_opentad_config(config_path), f"OpenTAD config {config_path}"
    return {}, ""


def _presets() -> dict:
    text = (resources.files("pbd_deploy") / "models" / "opentad_presets.json").read_text()
    return json.loads(text)


def _read(path: Path, seen: tuple) -> dict:
    if not path.is_file():
        raise PbdError(f"OpenTAD config {path} does not exist")
    if path.resolve() in seen:
        raise PbdError(f"OpenTAD config {path} includes itself through _base_")
    try:
        tree = ast.parse(path.read_text(), str(path))
    except (SyntaxError, UnicodeDecodeError) as exc:
        raise PbdError(f"OpenTAD config {path} is not valid Python: {exc}") from None
    names: dict = {}
    merged: dict = {}
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
            continue
        target = node.targets[0]
        if not isinstance(target, ast.Name):
            continue
        value = _eval(node.value, names)
        if target.id == "_base_":
            bases = [value] if isinstance(value, str) else value
            if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
                raise PbdError(f"{path}: _base_ must be a file name or a list of them")
            for base in bases:
                merged = _merge(merged, _read(path.parent / base, (*seen, path.resolve())))
            names.update(merged)  # a file may refer to its bases' variables
            continue
        names[target.id] = value
        merged = _merge(merged, {target.id: value})
    return merged


def _merge(base: dict, child: dict) -> dict:
    """mmengine's merge: child dicts update base dicts key by key, other values replace."""
    out = dict(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and not value.get("_delete_"):
            out[key] = _merge(out[key], value)
        else:
            out[key] = (
                {k: v for k, v in value.items() if k != "_delete_"}
                if isinstance(value, dict)
                else value
            )
    return out


def _eval(node: ast.AST, names: dict):
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return names.get(node.id, UNKNOWN)
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_eval(e, names) for e in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.Dict):
        return {_eval(k, names): _eval(v, names) for k, v in zip(node.keys, node.values) if k}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        value = _eval(node.operand, names)
        return -value if isinstance(value, (int, float)) else UNKNOWN
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _eval(node.left, names), _eval(node.right, names)
        if all(isinstance(v, (int, float)) for v in (left, right)):
            return _BINOPS[type(node.op)](left, right)
        return UNKNOWN
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        args = [_eval(a, names) for a in node.args]
        if node.func.id == "dict" and not args:
            return {kw.arg: _eval(kw.value, names) for kw in node.keywords if kw.arg}
        if node.func.id == "range" and all(isinstance(a, int) for a in args) and len(args) <= 3:
            return list(range(*args))
        if node.func.id in ("list", "tuple") and len(args) == 1 and isinstance(args[0], list):
            return list(args[0]) if node.func.id == "list" else tuple(args[0])
    return UNKNOWN


def get(config: dict, dotted: str, default=None):
    """`config["a"]["b"]` for "a.b"; `default` when absent or UNKNOWN."""
    value = config
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return default
        value = value[part]
    return default if value is UNKNOWN else value
