"""sparseattack: sparse and structured adversarial attacks on PyTorch image classifiers."""
from . import attacks, data, eval, models, ops  # noqa: A004 (module named eval, as in the design)
from .eval import AttackResult, run_attack

__version__ = "0.2.0"
__all__ = ["attacks", "data", "eval", "models", "ops", "run_attack", "AttackResult", "__version__"]
