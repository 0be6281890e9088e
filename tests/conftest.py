"""Shared fixtures: the shipped Fashion-MNIST net and a few correctly classified test images."""
from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from sparseattack import models
from sparseattack.data import FASHION_MNIST_DIR, load_fashion_mnist

# One thread: the nets and batches here are small, and on a loaded 2-core machine two threads
# per process made them many times slower. SPARSEATTACK_TEST_THREADS overrides it.
torch.set_num_threads(int(os.environ.get("SPARSEATTACK_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def fmnist_model():
    return models.load("fmnist-cw")


@pytest.fixture(scope="session")
def fmnist_test():
    if not (FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("Debian's dataset-fashion-mnist is not installed (make test installs it)")
    return load_fashion_mnist("test")


@pytest.fixture(scope="session")
def fmnist_batch(fmnist_model, fmnist_test):
    """8 correctly classified test images and labels (first ones in the test set)."""
    x, y = fmnist_test
    x, y = x[:64], y[:64]
    with torch.no_grad():
        ok = fmnist_model(x).argmax(1) == y
    return x[ok][:8].clone(), y[ok][:8].clone()


@pytest.fixture(scope="session")
def fmnist_pairs(fmnist_batch):
    """(images, labels, targets): each image with the target (label + 1) mod 10."""
    x, y = fmnist_batch
    return x, y, (y + 1) % 10


class NeverFooled(nn.Module):
    """The wrapped net with class 0 ahead by 1e4: no attack can reach another class or leave
    class 0, so every attack must fail and return its input."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.train(model.training)

    def forward(self, x):
        out = self.model(x)
        return out + 1e4 * (torch.arange(out.shape[1], device=out.device) == 0).to(out.dtype)


def assert_bad_calls_refused(call, model, x, t):
    """`call(model, inputs, labels)` must refuse a model in training mode, labels of the wrong
    length, float labels, labels out of range and inputs off the 8-bit grid, each with a clear
    error and before any gradient evaluation."""
    import copy

    from sparseattack.eval import CountingModel

    counter = CountingModel(model)
    with pytest.raises(ValueError, match="training mode"):
        call(copy.deepcopy(model).train(), x, t)
    for inputs, labels, error, match in ((x, t[:1], ValueError, rf"shape \({len(x)},\)"),
                                         (x, t.float(), TypeError, "integer"),
                                         (x, torch.cat([t[:-1], torch.tensor([10])]), ValueError, "10 classes"),
                                         (x * 0.999, t, ValueError, "8-bit")):
        with pytest.raises(error, match=match):
            call(counter, inputs, labels)
    assert counter.gradients == 0


def succeeds(model, adv, labels, targeted=True):
    """Top-1 success of each output (an independent forward pass)."""
    with torch.no_grad():
        pred = model(adv).argmax(1)
    return pred == labels if targeted else pred != labels


def check_finished(model, x, adv, labels, *, targeted=True, k=None, pixels=False, linf=None, l2=None):
    """What every quantized attack output must satisfy; returns the success per example."""
    assert adv.shape == x.shape and adv.dtype == x.dtype
    assert torch.equal((adv * 255).round() / 255, adv)  # exactly on the 8-bit grid
    assert adv.min() >= 0 and adv.max() <= 1
    d = adv - x
    assert ((d == 0) | (d.abs() >= 1 / 255 - 1e-6)).all()  # an entry is the input's or moved >= 1 level
    ok = succeeds(model, adv, labels, targeted)
    assert torch.equal(ok, d.flatten(1).ne(0).any(1))  # changed outputs succeed; failures are the input
    if k is not None:
        changed = d.ne(0).any(1) if pixels else d.ne(0)
        assert (changed.flatten(1).sum(1) <= k).all()
    if linf is not None:
        assert (d.abs().flatten(1).amax(1) <= torch.as_tensor(linf, dtype=x.dtype) + 1e-6).all()
    if l2 is not None:
        assert (d.flatten(1).norm(dim=1) <= torch.as_tensor(l2, dtype=x.dtype) * (1 + 1e-6)).all()
    return ok
