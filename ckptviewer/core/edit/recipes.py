"""Recipes: an ordered list of edit steps plus an output rule, applied to many files.

A recipe is saved as JSON with a version field::

    {"ckptviewer_recipe": 1, "name": "...", "description": "...",
     "steps": [{"op": "select_model"}, {"op": "strip_prefix"}, {"op": "remap_device", "mapping": {"*": "cpu"}}],
     "output": {"format": "pt", "folder": null, "name": "{stem}.clean{ext}", "exists": "error",
                "non_tensors": "error"}}

``output.folder`` null means beside each input; ``name`` may use ``{stem}`` (file name without its
suffix), ``{ext}`` (the suffix, or the format's when the format changes), ``{name}`` and ``{parent}``.
``exists`` says what to do when the output is there already: ``error`` (that file fails), ``skip``,
``overwrite`` or ``rename`` (``name-1.pt``, ``name-2.pt``...). Invalid recipes are rejected with a
message that names the bad step or field.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field

from ..util.errors import OperationError
from ..util.locations import is_url, location_name
from ..write.export import FORMATS
from .ops import Cast, RemapDevice, SelectModel, Step, StripPrefix, WeightsOnlySafe, step_from_json

VERSION = 1
EXISTS = ("error", "skip", "overwrite", "rename")
_SUFFIX = {"pt": None, "pt-legacy": None, "safetensors": ".safetensors"}
_FIELDS = re.compile(r"\{(\w+)\}")
PLACEHOLDERS = {"stem", "ext", "name", "parent"}


@dataclass
class OutputRule:
    format: str = "pt"
    folder: str | None = None
    name: str = "{stem}.clean{ext}"
    exists: str = "error"
    non_tensors: str = "error"

    def validate(self) -> None:
        for name in ("format", "name", "exists", "non_tensors"):
            if not isinstance(getattr(self, name), str):
                raise OperationError(f"output.{name} must be a string")
        if self.folder is not None and not isinstance(self.folder, str):
            raise OperationError("output.folder must be a string or null")
        if self.format not in FORMATS:
            raise OperationError(f"output.format {self.format!r} is not one of {', '.join(FORMATS)}")
        if self.exists not in EXISTS:
            raise OperationError(f"output.exists {self.exists!r} is not one of {', '.join(EXISTS)}")
        if self.non_tensors not in ("error", "drop", "metadata"):
            raise OperationError(f"output.non_tensors {self.non_tensors!r} is not error, drop or metadata")
        unknown = set(_FIELDS.findall(self.name)) - PLACEHOLDERS
        if unknown:
            raise OperationError(f"output.name uses unknown field(s) {', '.join(sorted(unknown))}; "
                                 f"use {', '.join('{' + p + '}' for p in sorted(PLACEHOLDERS))}")
        if not self.name or "/" in self.name or "\\" in self.name or self.name in (".", ".."):
            raise OperationError(f"output.name {self.name!r} must be a file name pattern, not a path")

    def output_path(self, source: str) -> str:
        """Where the output of ``source`` goes (a plain file name in the output folder)."""
        base = location_name(source)
        stem, ext = os.path.splitext(base)
        if base.endswith(".index.json"):
            stem, ext = base[: -len(".index.json")], ".index.json"
        ext = _SUFFIX[self.format] or (ext if ext and ext != ".safetensors" else ".pt")
        remote = is_url(source)
        # A URL's "folder" is not a place to write: its outputs go to the current folder unless one is set.
        parent = location_name(source.split("?", 1)[0].rsplit("/", 1)[0]) if remote else \
            os.path.basename(os.path.dirname(os.path.abspath(source)))
        name = self.name.format(stem=stem, ext=ext, name=base, parent=parent)
        name = sanitize_file_name(name)
        folder = self.folder or (os.getcwd() if remote else os.path.dirname(os.path.abspath(source)))
        return os.path.join(folder, name)


def sanitize_file_name(name: str) -> str:
    """A file name derived from file contents or patterns: no separators, no control characters, no dots alone."""
    cleaned = "".join("_" if ch in '/\\\0' or ord(ch) < 32 else ch for ch in name).strip()
    cleaned = cleaned.lstrip(".") or "output"
    return cleaned[:200]


@dataclass
class Recipe:
    name: str
    steps: list[Step]
    output: OutputRule = field(default_factory=OutputRule)
    description: str = ""
    id: str = ""

    def to_json(self) -> dict:
        return {"ckptviewer_recipe": VERSION, "name": self.name, "description": self.description,
                "steps": [s.to_json() for s in self.steps],
                "output": {"format": self.output.format, "folder": self.output.folder, "name": self.output.name,
                           "exists": self.output.exists, "non_tensors": self.output.non_tensors}}

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2)

    def save(self, path: str) -> None:
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(self.dumps() + "\n")
        os.replace(tmp, path)


def recipe_from_json(data: object, *, origin: str = "the recipe") -> Recipe:
    """Validate and build a recipe; errors name the step or field that is wrong."""
    if not isinstance(data, dict):
        raise OperationError(f"{origin} is not a JSON object")
    version = data.get("ckptviewer_recipe")
    if version is None:
        raise OperationError(f"{origin} has no \"ckptviewer_recipe\" version field; is it a recipe?")
    if version != VERSION:
        raise OperationError(f"{origin} is recipe version {version!r}; this ckptviewer reads version {VERSION}")
    steps_data = data.get("steps")
    if not isinstance(steps_data, list):
        raise OperationError(f"{origin}: \"steps\" must be a list")
    steps = []
    for i, s in enumerate(steps_data, 1):
        try:
            steps.append(step_from_json(s))
        except OperationError as e:
            label = s.get("op") if isinstance(s, dict) else repr(s)
            raise OperationError(f"{origin}, step {i} ({label}): {e.message}") from None
    out = data.get("output", {})
    if not isinstance(out, dict):
        raise OperationError(f"{origin}: \"output\" must be an object")
    unknown = set(out) - {"format", "folder", "name", "exists", "non_tensors"}
    if unknown:
        raise OperationError(f"{origin}: unknown output field(s) {', '.join(sorted(unknown))}")
    rule = OutputRule(**{k: v for k, v in out.items()})
    try:
        rule.validate()
    except OperationError as e:
        raise OperationError(f"{origin}: {e.message}") from None
    return Recipe(str(data.get("name") or "unnamed recipe"), steps, rule, str(data.get("description") or ""))


def load_recipe(path: str) -> Recipe:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(1 << 20)
    except OSError as e:
        raise OperationError(f"cannot read recipe {path}: {e.strerror or e}") from None
    try:
        data = json.loads(text)
    except ValueError as e:
        raise OperationError(f"{os.path.basename(path)} is not valid JSON ({e})") from None
    return recipe_from_json(data, origin=os.path.basename(path))


def presets() -> dict[str, Recipe]:
    """The built-in recipes, by id."""
    to_cpu = RemapDevice((("*", "cpu"),))
    items = [
        Recipe("Clean DataParallel checkpoint", [SelectModel(), StripPrefix(), to_cpu],
               OutputRule("pt", name="{stem}.clean{ext}"),
               "Keep the model's state_dict, strip module. / _orig_mod. prefixes, map every tensor to the CPU.",
               id="clean-dataparallel"),
        Recipe("Extract weights to safetensors", [SelectModel(), to_cpu],
               OutputRule("safetensors", name="{stem}.safetensors"),
               "Keep the model's state_dict and write it as .safetensors.", id="to-safetensors"),
        Recipe("GPU checkpoint to CPU", [to_cpu], OutputRule("pt", name="{stem}.cpu{ext}"),
               "Record every tensor (model and optimizer) as saved on the CPU; keep everything else.",
               id="gpu-to-cpu"),
        Recipe("Half precision (fp16) weights", [SelectModel(), to_cpu, Cast("float16")],
               OutputRule("pt", name="{stem}.fp16{ext}"),
               "Keep the model's state_dict and cast its floating-point tensors to float16.", id="fp16"),
        Recipe("Loadable with plain torch.load", [WeightsOnlySafe()], OutputRule("pt", name="{stem}.weights-only{ext}"),
               "Objects become dicts of their fields, pickled modules their state_dicts, numpy values numbers and "
               "tensors: torch.load opens the copy with its defaults (weights_only=True).", id="weights-only-safe"),
    ]
    return {r.id: r for r in items}


def find_recipe(spec: str) -> Recipe:
    """A preset id, or the path of a recipe JSON file."""
    table = presets()
    if spec in table:
        return table[spec]
    if os.path.exists(spec):
        return load_recipe(spec)
    raise OperationError(f"no recipe {spec!r}: not a preset ({', '.join(table)}) and no such file")
