"""Supervised fine-tuning: conversation files to datums, token-packed batches, and a pipelined,
resumable cross_entropy training loop with a learning-rate schedule and inline evaluation."""

from treadle_cookbook.supervised.checkpoints import (
    last_checkpoint,
    read_checkpoints,
    record_checkpoint,
)
from treadle_cookbook.supervised.data import (
    Conversation,
    DatasetError,
    SupervisedDataset,
    conversations_to_datums,
    load_conversations,
)
from treadle_cookbook.supervised.lr_schedule import SCHEDULES, lr_multiplier
from treadle_cookbook.supervised.train import Config, TrainResult, train

__all__ = [
    "SCHEDULES",
    "Config",
    "Conversation",
    "DatasetError",
    "SupervisedDataset",
    "TrainResult",
    "conversations_to_datums",
    "last_checkpoint",
    "load_conversations",
    "lr_multiplier",
    "read_checkpoints",
    "record_checkpoint",
    "train",
]
