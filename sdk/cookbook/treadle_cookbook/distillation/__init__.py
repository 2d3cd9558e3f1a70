"""Distillation: on-policy (the student's own samples, the teacher's per-token reverse KL as the
only reward, on the RL machinery) and off-policy (supervised fine-tuning on the teacher's
samples)."""

from treadle_cookbook.distillation.off_policy import sample_teacher_conversations
from treadle_cookbook.distillation.on_policy import (
    TeacherKLEvaluator,
    incorporate_teacher_kl,
    teacher_logprobs,
    train_on_policy,
)
from treadle_cookbook.distillation.prompts import (
    PromptDataset,
    PromptEnv,
    PromptGroupBuilder,
    load_prompts,
)

__all__ = [
    "PromptDataset",
    "PromptEnv",
    "PromptGroupBuilder",
    "TeacherKLEvaluator",
    "incorporate_teacher_kl",
    "load_prompts",
    "sample_teacher_conversations",
    "teacher_logprobs",
    "train_on_policy",
]
