"""Training of the small Fashion-MNIST nets: the shipped weights and their recipes.

Every shipped net comes from `train_fmnist` (CLI: `sparseattack train fmnist ...`) and ships with a
JSON file beside its weights recording the recipe, the command and the measured test accuracy
(`models.describe(name)`, `sparseattack models`). Common to all recipes: Adam, batch 128, dropout
0.5, random horizontal flips, no normalization (inputs are the [0, 1] pixels), the data order and
the initialization seeded by `seed`, on 2 CPU cores.

Recipes:
- 'standard': cross-entropy on the labels. The learning rate follows `schedule`: 'step' (halved
  every 2 epochs; the recipe of the first shipped net, 6 epochs, 88.81%) or 'cosine' (cosine decay
  to 0 over the epochs, the default).
- 'pgd' (Madry et al. 2018, the "adversarially trained" defense of StrAttack Table 2): every batch
  is replaced by its ℓ∞ PGD adversarial examples (radius `adv_eps`, `adv_steps` steps of size
  2.5 * adv_eps / adv_steps, random start, the model in eval mode while attacking) before the step.
- 'distill' (Papernot et al. 2016, defensive distillation, StrAttack Table A1): a teacher is trained
  with softmax(z / T) on the labels, then a student of the same architecture with softmax(z / T) on
  the teacher's soft labels softmax(z_teacher / T), each for `epochs`; the deployed net is the
  student with its raw logits (temperature 1 at test time, as in the paper).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..validation import ValidationError
from .small_nets import CWMnistNet, CWMnistWideNet

ARCHITECTURES = {"cw-mnist": CWMnistNet, "cw-mnist-wide": CWMnistWideNet}
RECIPES = ("standard", "pgd", "distill")


@dataclass(frozen=True)
class Recipe:
    """A training recipe (see the module docstring); every field is recorded beside the weights."""
    recipe: str = "standard"
    architecture: str = "cw-mnist"
    epochs: int = 12
    seed: int = 0
    batch_size: int = 128
    lr: float = 1e-3
    schedule: str = "cosine"
    adv_eps: float = 0.1
    adv_steps: int = 5
    temperature: float = 100.0
    train_images: int | None = None   # the first N training images only (None: all 60,000; tests use few)

    def check(self) -> "Recipe":
        if self.recipe not in RECIPES:
            raise ValidationError(f"unknown recipe {self.recipe!r}; use one of {', '.join(RECIPES)}")
        if self.architecture not in ARCHITECTURES:
            raise ValidationError(f"unknown architecture {self.architecture!r}; use one of {', '.join(ARCHITECTURES)}")
        if self.schedule not in ("step", "cosine"):
            raise ValidationError(f"unknown schedule {self.schedule!r}; use step or cosine")
        if self.epochs < 1 or self.batch_size < 1 or (self.train_images is not None and self.train_images < 1):
            raise ValidationError("epochs, batch_size and train_images must be at least 1")
        if not (self.lr > 0 and self.adv_eps > 0 and self.adv_steps >= 1 and self.temperature > 0):
            raise ValidationError("lr, adv_eps and temperature must be positive and adv_steps at least 1")
        return self

    def recorded(self) -> dict:
        """The fields that matter for this recipe (the PGD fields only for 'pgd', T only for 'distill')."""
        d = asdict(self)
        if self.recipe != "pgd":
            d.pop("adv_eps"), d.pop("adv_steps")
        if self.recipe != "distill":
            d.pop("temperature")
        if self.train_images is None:
            d.pop("train_images")
        return d


@torch.inference_mode()
def accuracy(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy of a model on [0, 1] images."""
    was_training = model.training
    model.eval()
    correct = 0
    for i in range(0, len(images), batch_size):
        correct += (model(images[i:i + batch_size]).argmax(1) == labels[i:i + batch_size]).sum().item()
    model.train(was_training)
    return correct / len(images)


def pgd_linf(net: nn.Module, x: Tensor, y: Tensor, eps: float, steps: int, gen: torch.Generator) -> Tensor:
    """Untargeted ℓ∞ PGD with a random start (Madry et al. 2018), the net in eval mode."""
    was_training = net.training
    net.eval()
    step = 2.5 * eps / steps
    delta = (torch.rand(x.shape, generator=gen) * 2 - 1) * eps
    delta = ((x + delta).clamp(0, 1) - x).requires_grad_(True)
    for _ in range(steps):
        loss = F.cross_entropy(net(x + delta), y)
        (g,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            delta += step * g.sign()
            delta.clamp_(-eps, eps)
            delta.copy_((x + delta).clamp(0, 1) - x)
    net.train(was_training)
    return (x + delta).detach()


def _fit(net: nn.Module, x_train: Tensor, y_train: Tensor, recipe: Recipe, gen: torch.Generator, *,
         soft_targets: Tensor | None = None, temperature: float = 1.0, progress: bool = True,
         evaluate=None, label: str = "") -> None:
    from tqdm import tqdm

    opt = torch.optim.Adam(net.parameters(), lr=recipe.lr)
    steps_per_epoch = -(-len(x_train) // recipe.batch_size)
    if recipe.schedule == "step":
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2 * steps_per_epoch, gamma=0.5)
    else:
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=recipe.epochs * steps_per_epoch)
    start = time.time()
    for epoch in range(recipe.epochs):
        net.train()
        order = torch.randperm(len(x_train), generator=gen)
        bar = tqdm(range(0, len(order), recipe.batch_size), desc=f"{label}epoch {epoch + 1}/{recipe.epochs}",
                   disable=not progress, leave=False)
        for i in bar:
            idx = order[i:i + recipe.batch_size]
            xb, yb = x_train[idx], y_train[idx]
            flip = torch.rand(len(idx), generator=gen) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
            if recipe.recipe == "pgd":
                xb = pgd_linf(net, xb, yb, recipe.adv_eps, recipe.adv_steps, gen)
            logits = net(xb) / temperature
            if soft_targets is None:
                loss = F.cross_entropy(logits, yb)
            else:
                loss = F.cross_entropy(logits, soft_targets[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if progress and evaluate is not None:
            print(f"{label}epoch {epoch + 1}/{recipe.epochs}: test accuracy {evaluate(net):.4f} "
                  f"({time.time() - start:.0f}s)", flush=True)


def command(r: Recipe, out) -> str:
    """The `sparseattack train` command line that makes a recipe's net."""
    default = Recipe()
    parts = ["sparseattack train fmnist"]
    for key, value in r.recorded().items():
        if value != getattr(default, key) or key in ("epochs", "seed", "recipe"):
            parts.append(f"--{key.replace('_', '-')} {value}")
    return " ".join(parts + ["--threads 2", f"--out {Path(out).name}"])


def train_fmnist(epochs: int | None = None, *, seed: int | None = None, recipe: Recipe | str = "standard",
                 out: str | Path | None = None, progress: bool = True, data_root=None,
                 **fields) -> tuple[nn.Module, float]:
    """Train a net on Fashion-MNIST by a recipe; returns (net, test accuracy on the 10,000 test images).

    recipe: a `Recipe` or its name ('standard', 'pgd', 'distill'); epochs, seed and other `fields`
    override the Recipe's (defaults: 12 epochs, seed 0, cosine schedule, lr 1e-3, batch 128,
    adv_eps 0.1, adv_steps 5, temperature 100). out: where to save the state dict; the recipe, the
    accuracy and the seconds go to the same path with suffix .json. The returned net takes [0, 1]
    images and returns logits (no normalization).
    """
    from ..data import FASHION_MNIST_DIR, load_fashion_mnist

    base = recipe if isinstance(recipe, Recipe) else Recipe(recipe=recipe)
    over = dict(fields)
    if epochs is not None:
        over["epochs"] = epochs
    if seed is not None:
        over["seed"] = seed
    unknown = set(over) - set(Recipe.__dataclass_fields__)
    if unknown:
        raise ValidationError(f"unknown training fields {sorted(unknown)}; known: {sorted(Recipe.__dataclass_fields__)}")
    r = Recipe(**{**asdict(base), **over}).check()
    root = data_root or FASHION_MNIST_DIR
    x_train, y_train = load_fashion_mnist("train", root)
    if r.train_images is not None:
        x_train, y_train = x_train[:r.train_images], y_train[:r.train_images]
    x_test, y_test = load_fashion_mnist("test", root)
    gen = torch.Generator().manual_seed(r.seed)
    torch.manual_seed(r.seed)
    build = ARCHITECTURES[r.architecture]
    start = time.time()
    evaluate = lambda n: accuracy(n, x_test, y_test)  # noqa: E731
    net = build()
    if r.recipe == "distill":
        _fit(net, x_train, y_train, r, gen, temperature=r.temperature, progress=progress, evaluate=evaluate,
             label="teacher ")
        net.eval()
        with torch.inference_mode():
            soft = torch.cat([F.softmax(net(x_train[i:i + 1000]) / r.temperature, dim=1)
                              for i in range(0, len(x_train), 1000)])
        net = build()
        _fit(net, x_train, y_train, r, gen, soft_targets=soft, temperature=r.temperature, progress=progress,
             evaluate=evaluate, label="student ")
    else:
        _fit(net, x_train, y_train, r, gen, progress=progress, evaluate=evaluate)
    net.eval()
    acc = accuracy(net, x_test, y_test)
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        torch.save(net.state_dict(), out)
        info = {"recipe": r.recorded(), "test_accuracy": acc, "command": command(r, out), "seconds": round(time.time() - start, 1),
                "threads": torch.get_num_threads(), "torch": torch.__version__}
        out.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    return net, acc
