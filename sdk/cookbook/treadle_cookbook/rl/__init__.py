"""Reinforcement learning on the SDK's primitives (tinker-cookbook's abstractions): Env,
EnvGroupBuilder and RLDataset; ProblemEnv for verifiable single-turn tasks; rollouts through a
SamplingClient; group mean-centred advantages; importance_sampling / ppo / cispo losses with an
optional KL penalty; synchronous, stream-minibatch and async off-policy training loops."""

from treadle_cookbook.rl.data_processing import (
    assemble_training_data,
    centered_advantages,
    compute_advantages,
    remove_constant_reward_groups,
    trajectory_to_data,
)
from treadle_cookbook.rl.evaluation import RLTestSetEvaluator
from treadle_cookbook.rl.metrics import (
    compute_kl_sample_train,
    compute_trajectory_metrics,
    incorporate_kl_penalty,
    kl_penalty_adjustments,
)
from treadle_cookbook.rl.problem_env import ProblemEnv, ProblemGroupBuilder
from treadle_cookbook.rl.rollouts import do_group_rollout, do_single_rollout
from treadle_cookbook.rl.train import (
    AsyncConfig,
    Config,
    StreamMinibatchConfig,
    TrainResult,
    train,
)
from treadle_cookbook.rl.types import (
    Action,
    Env,
    EnvGroupBuilder,
    Metrics,
    Observation,
    RLDataset,
    RLDatasetBuilder,
    RolloutError,
    StepResult,
    Trajectory,
    TrajectoryGroup,
    Transition,
)

__all__ = [
    "Action",
    "AsyncConfig",
    "Config",
    "Env",
    "EnvGroupBuilder",
    "Metrics",
    "Observation",
    "ProblemEnv",
    "ProblemGroupBuilder",
    "RLDataset",
    "RLDatasetBuilder",
    "RLTestSetEvaluator",
    "RolloutError",
    "StepResult",
    "StreamMinibatchConfig",
    "TrainResult",
    "Trajectory",
    "TrajectoryGroup",
    "Transition",
    "assemble_training_data",
    "centered_advantages",
    "compute_advantages",
    "compute_kl_sample_train",
    "compute_trajectory_metrics",
    "do_group_rollout",
    "do_single_rollout",
    "incorporate_kl_penalty",
    "kl_penalty_adjustments",
    "remove_constant_reward_groups",
    "train",
    "trajectory_to_data",
]
