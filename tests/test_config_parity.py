"""Every stage's config dataclass and its command have the same options, with the same defaults.

The lists are derived, not written down: the config's fields (`dataclasses.fields`) against
the command's Click parameters. A field without an option must be named in the config's
docstring after "Python-only:" (with the reason); an option without a field must be one of
the command's inputs or outputs below. A new field or option is checked automatically.
"""

from __future__ import annotations

import dataclasses
import importlib
import re

import click
import pytest

from pbd_deploy.cli import main

UNSET = getattr(importlib.import_module("click._utils"), "UNSET", None)  # Click >= 8.2: no default

# Parameters that say what to read or write, not how the stage runs: never config fields.
NOT_OPTIONS = {
    "model_dir", "models", "model", "data", "out", "force", "resume", "json_out", "plot",
    "name", "drop", "onnx_file",
}  # fmt: skip

# command path -> (config class, {parameter: field it sets, where the names differ})
COMMANDS = {
    ("synth",): ("pbd_deploy.data.synthetic:SynthConfig", {}),
    ("train",): ("pbd_deploy.train:TrainConfig", {}),
    ("compress",): ("pbd_deploy.compress.config:BlockDropConfig", {"one_shot": "schedule"}),
    ("prune",): ("pbd_deploy.compress.config:ChannelPruneConfig", {}),
    ("export",): ("pbd_deploy.export.config:ExportConfig", {"workspace": "workspace_gib"}),
    ("build-engine",): ("pbd_deploy.export.config:EngineConfig", {"workspace": "workspace_gib"}),
    ("bench", "models"): ("pbd_deploy.bench.config:BenchConfig", {}),
    ("bench", "gemm"): ("pbd_deploy.bench.gemm:GemmConfig", {}),
    ("quickstart",): ("pbd_deploy.quickstart:QuickstartConfig", {"epochs": "train.epochs"}),
}
# Options whose value is converted before it becomes the field (a flag for a choice, a
# comma-separated list): their defaults are compared by `_same_default` with this help.
FLAG_FOR_CHOICE = {"one_shot": ("one-shot", "progressive")}  # flag on / off -> field value
# Options whose default is read from the input, not the config (the reason is in --help).
FROM_INPUT = {("build-engine",): {"precision"}}  # the ONNX file's own precision


def _command(path: tuple[str, ...]) -> click.Command:
    command = main
    for name in path:
        if name not in command.commands:
            pytest.skip(f"`pbd-deploy {' '.join(path)}` does not exist (yet)")
        command = command.commands[name]
    return command


def _config(spec: str) -> type:
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def python_only(cls: type) -> set[str]:
    """The fields a config's docstring names after "Python-only:" (up to a blank line)."""
    match = re.search(r"Python-only:(.*?)(?:\n\s*\n|$)", cls.__doc__ or "", re.S)
    return set(re.findall(r"`(\w+)`", match.group(1))) if match else set()


def _field(cls: type, path: str) -> dataclasses.Field:
    """The (possibly nested, "train.epochs") field of `cls`."""
    head, _, rest = path.partition(".")
    field = {f.name: f for f in dataclasses.fields(cls)}[head]
    if not rest:
        return field
    nested = field.default_factory if field.default_factory is not dataclasses.MISSING else None
    return _field(type(nested()) if nested else type(field.default), rest)


def _default(field: dataclasses.Field):
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def _options(command: click.Command, fields: set[str], renamed: dict) -> dict[str, str]:
    """The command's config options: parameter name -> the field it sets."""
    options = {}
    for param in command.params:
        if param.name in NOT_OPTIONS and param.name not in fields:
            continue
        options[param.name] = renamed.get(param.name, param.name)
    return options


@pytest.mark.parametrize("path", list(COMMANDS), ids=" ".join)
def test_config_fields_and_options_match(path):
    command = _command(path)
    spec, renamed = COMMANDS[path]
    cls = _config(spec)
    fields = {f.name for f in dataclasses.fields(cls)}
    options = _options(command, fields, renamed)
    covered = {target.split(".")[0] for target in options.values()}
    documented = python_only(cls)
    cli = f"pbd-deploy {' '.join(path)}"
    missing = sorted(fields - covered - documented)
    assert not missing, (
        f"{cls.__name__} fields without a {cli} option: {missing}; add the option, or name "
        "them after 'Python-only:' in the docstring with the reason"
    )
    stale = sorted(documented & covered - {t.split(".")[0] for t in options.values() if "." in t})
    assert not stale, f"{cls.__name__} docstring calls {stale} Python-only, but {cli} has them"
    unknown = sorted(documented - fields)
    assert not unknown, f"{cls.__name__} docstring names {unknown} as Python-only: no such fields"
    extra = sorted(p for p, target in options.items() if target.split(".")[0] not in fields)
    assert not extra, (
        f"{cli} options without a {cls.__name__} field: {extra}; add the field (one field per "
        "option), or, for an input or output, add it to NOT_OPTIONS here"
    )


@pytest.mark.parametrize("path", list(COMMANDS), ids=" ".join)
def test_option_defaults_are_the_config_defaults(path):
    command = _command(path)
    spec, renamed = COMMANDS[path]
    cls = _config(spec)
    fields = {f.name for f in dataclasses.fields(cls)}
    ctx = click.Context(command)
    params = {p.name: p for p in command.params}
    wrong = []
    for name, target in _options(command, fields, renamed).items():
        if target.split(".")[0] not in fields or name in FROM_INPUT.get(path, ()):
            continue  # no field (the other test says so), or a default read from the input
        want = _default(_field(cls, target))
        got = params[name].get_default(ctx)
        got = None if got is UNSET else got
        if not _same_default(name, got, want):
            wrong.append(f"--{name.replace('_', '-')} {got!r} (field {target}: {want!r})")
    assert not wrong, f"pbd-deploy {' '.join(path)} defaults differ: {'; '.join(wrong)}"


def _same_default(name: str, option, field) -> bool:
    if name in FLAG_FOR_CHOICE:
        on, off = FLAG_FOR_CHOICE[name]
        return field == (on if option else off)
    if isinstance(field, (list, tuple)):
        if isinstance(option, str):  # a comma-separated option: "attn.qkv,attn.proj"
            return option == ",".join(map(str, field))
        return list(option or []) == list(field)
    if isinstance(field, bool):
        return bool(option) == field
    return option == field


def _captured_config(monkeypatch, module: str, function: str, args: list[str]):
    """Run a command with its library function replaced; the config it was given."""
    from click.testing import CliRunner

    seen = {}

    def capture(*a, **k):
        seen["config"] = next(v for v in (*a, *k.values()) if dataclasses.is_dataclass(v))
        raise SystemExit(0)

    monkeypatch.setattr(importlib.import_module(module), function, capture)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return seen["config"]


def test_train_options_reach_the_config(monkeypatch):
    config = _captured_config(monkeypatch, "pbd_deploy.train", "train_model_dir", [
        "train", "--data", "d", "--out", "o", "--recipe", "paper", "--no-augment",
        "--drop-path", "0.2", "--weight-decay", "0.01", "--warmup-epochs", "2",
        "--clip-grad", "5", "--windows-per-video", "3", "--ema-decay", "0.99",
        "--past-end", "drop", "--subsets", "opentad-thumos",
    ])  # fmt: skip
    assert (config.recipe, config.augment, config.drop_path) == ("paper", False, 0.2)
    assert config.subsets == "opentad-thumos"
    assert (config.weight_decay, config.warmup_epochs, config.clip_grad) == (0.01, 2.0, 5.0)
    assert (config.windows_per_video, config.ema_decay, config.past_end) == (3, 0.99, "drop")
    assert config.lr == 1e-4 and config.ema  # not given: the paper recipe's


def test_compress_options_reach_the_config(monkeypatch):
    config = _captured_config(monkeypatch, "pbd_deploy.compress.pbd", "compress_model_dir", [
        "compress", "m", "--data", "d", "--out", "o", "--one-shot", "--weight-decay", "0",
        "--warmup-epochs", "0", "--windows-per-video", "1", "--past-end", "keep",
        "--subsets", "training=train+val,validation=test",
    ])  # fmt: skip
    assert (config.schedule, config.weight_decay, config.warmup_epochs) == ("one-shot", 0, 0)
    assert (config.windows_per_video, config.past_end) == (1, "keep")
    assert config.subsets == "training=train+val,validation=test"
