"""Named presets: a method, its options and trainer options, as JSON files found by name.

Like open_clip's model configs, a preset is data, not code. Every ``*.json`` file in this folder
is a preset named after the file (``cusa-vse-tuned.json`` is ``cusa-vse-tuned``); adding a file
adds a preset. The format::

    {
      "description": "one line: what it is and where its values were chosen",
      "method": "cusa(vse)",                        # required: a registered method name
      "method_options": {"teacher_temperature": 0.1},   # optional: method options
      "train_options": {"patience": 5},             # optional: TrainConfig options
      "image_encoder": "efficientnet-lite1",        # optional: the features it was chosen on
      "text_encoder": "minilm"                      # optional
    }

No other keys are allowed; option names and values are checked against the method's config and
:class:`~xmodal.training.TrainConfig` when the preset is loaded, so a typo is an error naming
the file; encoder names are checked against the registered encoders (nothing is loaded). ``xmodal
train --preset NAME`` (or ``--preset path/to/file.json``) starts from a preset; options given
explicitly (``-o``, ``-t``, ``--epochs``, ``--image-encoder``, …) override its values key by key.
``xmodal list presets`` lists them. In Python::

    from xmodal.training.presets import get_preset, list_presets
    list_presets()                       # ['cusa-vse-tuned', ...]
    get_preset("cusa-vse-tuned").method_options
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from xmodal.encoders import check_encoder_name
from xmodal.methods.registry import method_config
from xmodal.options import build_config
from xmodal.registry import add_named
from xmodal.training.config import TrainConfig

__all__ = [
    "PRESET_DIR",
    "Preset",
    "get_preset",
    "list_presets",
    "load_preset_file",
    "register_preset",
    "resolve_preset",
]

#: The folder scanned for the built-in presets.
PRESET_DIR = Path(__file__).resolve().parent

_KEYS = {
    "description",
    "method",
    "method_options",
    "train_options",
    "image_encoder",
    "text_encoder",
}
_PRESETS: dict[str, Preset] = {}


@dataclass(frozen=True)
class Preset:
    """A named starting point for training.

    Attributes:
        name: How the preset is found (the JSON file's stem).
        method: Registered method name, e.g. ``"cusa(vse)"``.
        method_options: Options of the method's config.
        train_options: Options of :class:`~xmodal.training.TrainConfig`.
        description: One line for ``xmodal list presets``.
        source: The file it was read from (``None`` when registered from Python).
        image_encoder: Registered image encoder the preset was chosen with (``None``: the
            default, or what the method's image tower reads).
        text_encoder: Registered text encoder, likewise.
    """

    name: str
    method: str
    method_options: Mapping[str, Any] = field(default_factory=dict)
    train_options: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    source: Path | None = None
    image_encoder: str | None = None
    text_encoder: str | None = None

    def validate(self) -> None:
        """Check the method and every option; errors name the preset (and its file).

        Raises:
            ValueError: unknown method, unknown option, a value of the wrong type or an unknown
                encoder.
        """
        where = f"preset {self.name!r}" + (f" ({self.source})" if self.source else "")
        try:
            method_config(self.method, dict(self.method_options))
            build_config(TrainConfig, dict(self.train_options), "trainer option")
            for modality, name in (("image", self.image_encoder), ("text", self.text_encoder)):
                if name is not None:
                    check_encoder_name(modality, name)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{where}: {e}") from e


def load_preset_file(path: str | Path) -> Preset:
    """Read and check one preset file (named after the file's stem).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not valid JSON, unknown keys, or options that do not fit (naming the file).
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"preset file {path} does not exist") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: not valid JSON: {e.msg}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a preset is a JSON object, got {type(raw).__name__}")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise ValueError(f"{path}: unknown preset key(s) {unknown}; known: {sorted(_KEYS)}")
    if not isinstance(raw.get("method"), str):
        raise ValueError(f'{path}: a preset needs "method": a registered method name')
    for key in ("method_options", "train_options"):
        if not isinstance(raw.get(key, {}), dict):
            raise ValueError(f"{path}: {key!r} must be a JSON object")
    for key in ("image_encoder", "text_encoder"):
        if not isinstance(raw.get(key, ""), str):
            raise ValueError(f"{path}: {key!r} must be an encoder name (a string)")
    preset = Preset(
        name=path.stem,
        method=raw["method"],
        method_options=dict(raw.get("method_options", {})),
        train_options=dict(raw.get("train_options", {})),
        description=str(raw.get("description", "")),
        source=path,
        image_encoder=raw.get("image_encoder"),
        text_encoder=raw.get("text_encoder"),
    )
    preset.validate()
    return preset


def register_preset(preset: Preset) -> Preset:
    """Add ``preset`` to the registry (checked first); a name already taken warns and is replaced."""
    _load_builtin()
    preset.validate()
    return add_named(_PRESETS, preset.name, preset, "preset", _where)


def _where(preset: Preset) -> str:
    return str(preset.source) if preset.source else "Python (register_preset)"


def _load_builtin() -> None:
    if _PRESETS:
        return
    for path in sorted(PRESET_DIR.glob("*.json")):
        _PRESETS[path.stem] = load_preset_file(path)


def list_presets(pattern: str = "*") -> list[str]:
    """Names of the registered presets matching a shell-style pattern."""
    _load_builtin()
    return sorted(n for n in _PRESETS if fnmatch.fnmatch(n, pattern))


def get_preset(name: str | Path) -> Preset:
    """The preset registered as ``name``, or read from ``name`` when it is a path to a JSON file.

    Raises:
        ValueError: no such preset (the message lists the known ones).
    """
    _load_builtin()
    if isinstance(name, str) and name in _PRESETS:
        return _PRESETS[name]
    path = Path(name)
    if path.suffix == ".json" or path.is_file():
        return load_preset_file(path)
    raise ValueError(f"unknown preset {str(name)!r}; known: {', '.join(sorted(_PRESETS))}")


def resolve_preset(
    preset: str | Path | None,
    method: str | None,
    method_options: Mapping[str, Any] | None = None,
    train_options: Mapping[str, Any] | None = None,
) -> Preset:
    """The preset a run trains with: ``preset``'s method, encoders and options, its options
    overridden key by key by the explicit ones. Without a preset, an unnamed one of ``method``
    (default ``infonce``) and the explicit options.

    Raises:
        ValueError: ``method`` is given and differs from the preset's.
    """
    if preset is None:
        return Preset(
            "", method or "infonce", dict(method_options or {}), dict(train_options or {})
        )
    p = get_preset(preset)
    if method is not None and method.replace(" ", "") != p.method.replace(" ", ""):
        raise ValueError(
            f"preset {p.name!r} trains {p.method!r}, but the method {method!r} was given: "
            "leave the method out or pick another preset"
        )
    return replace(
        p,
        method_options={**p.method_options, **(method_options or {})},
        train_options={**p.train_options, **(train_options or {})},
    )
