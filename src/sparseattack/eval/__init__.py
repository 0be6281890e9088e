"""Measuring attacks: per-pair metrics, verified success, the papers' protocol and tables."""
from .counting import CountingModel
from .metrics import NORM_KEYS, perturbation_norms
from .config import ConfigMismatch, config_hash, model_fingerprint
from .protocol import (OutputLock, check_compatible, check_unique, correctly_classified, evaluate, make_pairs,
                       predict, read_records, run_config, start_fresh, summarize, to_csv, to_markdown,
                       load_adversarial, sweep, sweep_rows)
from .result import AttackResult, probe, run_attack
from .tables import format_value, markdown_table, table1, table1_csv

__all__ = ["ConfigMismatch", "config_hash", "model_fingerprint", "OutputLock", "check_compatible",
           "check_unique", "correctly_classified", "run_config", "start_fresh", "CountingModel", "NORM_KEYS", "perturbation_norms", "evaluate", "make_pairs", "predict",
           "read_records", "summarize", "to_csv", "to_markdown", "AttackResult", "probe", "run_attack",
           "format_value", "markdown_table", "table1", "table1_csv", "load_adversarial", "sweep", "sweep_rows"]
