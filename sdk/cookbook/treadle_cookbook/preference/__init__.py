"""Preference learning: preference-pair files and DPO on forward_backward_custom with the initial
weights as the frozen reference."""

from treadle_cookbook.preference.data import (
    PreferenceDataError,
    PreferenceDataset,
    PreferencePair,
    load_preference_pairs,
    pair_to_datums,
    parse_pair,
)
from treadle_cookbook.preference.dpo import (
    DPOConfig,
    DPOResult,
    PreferenceEvaluator,
    dpo_loss,
    make_dpo_loss_fn,
    train_dpo,
)

__all__ = [
    "DPOConfig",
    "DPOResult",
    "PreferenceDataError",
    "PreferenceDataset",
    "PreferenceEvaluator",
    "PreferencePair",
    "dpo_loss",
    "load_preference_pairs",
    "make_dpo_loss_fn",
    "pair_to_datums",
    "parse_pair",
    "train_dpo",
]
