"""Treadle cookbook: renderers, supervised learning, RL, preferences, distillation and evals,
built only on the SDK's four primitives (forward_backward, optim_step, save/load, sample)."""
