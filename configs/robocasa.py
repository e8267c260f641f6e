"""RoboCasa policy: official experiment cosmos_predict2_2b_480p_robocasa_50_demos_per_task."""

from cosmos_jax.train import config_lib


def get_config(arg: str | None = None):
  c = config_lib.base_config(experiment='cosmos_predict2_2b_480p_robocasa_50_demos_per_task', layout='robocasa',
                             batch_size=800,  # 25 per GPU × 32 GPUs
                             cycle=30_000, warm_up=1_000)
  c.total_steps = 45_000  # README: 45K steps
  if arg:
    raise ValueError(f"unknown variant {arg!r} of configs/robocasa.py (known: '')")
  return c
