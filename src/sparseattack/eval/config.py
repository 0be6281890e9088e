"""Run configurations: what made a record, so that nothing is reused or merged across settings.

Every record of `evaluate` carries `config` (the dict below) and `config_hash` (the first 16 hex
digits of the SHA-256 of its canonical JSON). Resuming skips a pair only when a record with the
same `config_hash`, image and target exists; a file holding records of another configuration is
refused with the keys that differ (`ConfigMismatch`), never silently reused.

Configuration keys:
- `method`: the name the records carry; `attack`: the registered attack (or the function's name);
- `params`: every parameter of the attack with defaults filled in (`AttackSpec.resolve`; SAPF's
  schedule fields with the values of the chosen preset); tensors are keyed by a hash of their
  values;
- `quantize`: whether outputs end on the 8-bit grid (the default) or stay float;
- `model`: the model's name; `model_sha256`: a hash of its parameters and buffers (16 hex digits),
  so retrained weights under the same name are a different configuration;
- `dataset`: the dataset spec the images came from; `targets` ('all' or a number) and `seed`:
  the protocol's target choice;
- `version`: the sparseattack version (a new version may change an attack's behaviour).
Not keyed (recorded for information in each record): device, torch version, seconds.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import torch
from torch import Tensor, nn

from ..validation import ValidationError

__all__ = ["ConfigMismatch", "config_hash", "diff_configs", "jsonable", "model_fingerprint",
           "package_version", "RUN_KEYS"]

# The protocol-level keys every record of one file must share (a file is one experiment).
RUN_KEYS = ("model", "model_sha256", "dataset", "targets", "seed", "quantize", "version")


class ConfigMismatch(ValidationError):
    """An output file already holds records made under another configuration."""


def package_version() -> str:
    from .. import __version__
    return __version__


def jsonable(value: Any) -> Any:
    """A JSON-ready, canonical form of a parameter value (tensors become a hash of their values)."""
    if isinstance(value, Tensor):
        t = value.detach().cpu().contiguous()
        digest = hashlib.sha256(t.numpy().tobytes() if t.dtype != torch.bfloat16 else
                                t.float().numpy().tobytes()).hexdigest()[:16]
        return {"tensor": digest, "shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", "")}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and value != value:
        return "nan"
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if callable(value):
        return f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', repr(value))}"
    return repr(value)


def config_hash(config: dict) -> str:
    """First 16 hex digits of the SHA-256 of the configuration's canonical JSON."""
    text = json.dumps(jsonable(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def diff_configs(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Human-readable differences between two configurations ('params.eps: 0.01 -> 0.3')."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += diff_configs(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {json.dumps(a)} -> {json.dumps(b)}")
    return out


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 (16 hex digits) of a model's parameters and buffers, by name, in a fixed order."""
    inner = getattr(model, "model", None)
    if inner is not None and type(model).__name__ == "CountingModel":
        model = inner
    h = hashlib.sha256()
    for name, t in sorted(list(model.state_dict().items()), key=lambda kv: kv[0]):
        if not isinstance(t, Tensor):
            continue
        t = t.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update((t.float() if t.dtype == torch.bfloat16 else t).numpy().tobytes())
    return h.hexdigest()[:16]


def model_name(model: nn.Module) -> str:
    """The registry name of a model from `sparseattack.models.load`, else its class name."""
    return getattr(model, "sparseattack_name", None) or type(getattr(model, "net", model)).__name__
