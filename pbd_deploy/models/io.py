"""The model directory: `config.json` + `model.safetensors`, written atomically, no pickle."""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from pbd_deploy.core.atomic import write_atomically
from pbd_deploy.errors import PbdError
from pbd_deploy.models.detector import Detector, DetectorConfig

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def add_history(detector: Detector, stage: str, **figures) -> None:
    """Append one stage record (name, UTC time, figures) to the model's config history."""
    when = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    detector.config.history.append({"stage": stage, "time": when, **figures})


def save_model(model: Detector, out_dir: str | Path, force: bool = False, extra=None) -> Path:
    """Write config.json + model.safetensors (+ `extra`: {filename: text or bytes}) atomically."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}

    def write(tmp: Path):
        (tmp / CONFIG_FILE).write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        for name, content in (extra or {}).items():
            path = tmp / name
            path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)

    return write_atomically(out_dir, write, force, marker=CONFIG_FILE)


def load_config(model_dir: str | Path) -> DetectorConfig:
    """Read and validate config.json of a model directory."""
    path = Path(model_dir) / CONFIG_FILE
    if not Path(model_dir).is_dir():
        raise PbdError(f"model directory {model_dir} does not exist")
    if not path.is_file():
        raise PbdError(f"{model_dir} is not a model directory: {CONFIG_FILE} is missing")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise PbdError(f"{path} is not valid JSON: {exc}") from None
    return DetectorConfig.from_dict(data, str(path))


def load_model(model_dir: str | Path, device: str = "cpu") -> Detector:
    """Rebuild the detector of a model directory and load its weights (safetensors only)."""
    config = load_config(model_dir)
    model = Detector(config)
    path = Path(model_dir) / WEIGHTS_FILE
    if not path.is_file():
        raise PbdError(f"{path} is missing")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise PbdError(f"{path} is corrupt or not a safetensors file ({exc})") from None
    load_state(model, state, str(path))
    return model.to(device).eval()


def load_state(model: Detector, state: dict, source: str) -> None:
    """Load `state` strictly, turning any key or shape mismatch into one PbdError line."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or wrong:
        raise PbdError(
            f"{source} does not match the {model.config.name} "
            f"architecture: missing keys {_short(missing)}; unexpected keys {_short(unexpected)}; "
            f"wrong shapes {_short(wrong)}"
        )
    model.load_state_dict(state, strict=True)


def _short(items: list[str], limit: int = 8) -> str:
    if not items:
        return "none"
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return "[" + ", ".join(items[:limit]) + "]" + more
