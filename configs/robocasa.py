"""RoboCasa policy: official experiment cosmos_predict2_2b_480p_robocasa_50_demos_per_task.

Variants: '' the official recipe.
"""

from configs import common


def get_config(arg: str | None = None):
  common.parse_arg(arg, name='configs/robocasa.py')
  c = common.base(experiment='cosmos_predict2_2b_480p_robocasa_50_demos_per_task', layout='robocasa',
                  batch_size=800,  # 25 per GPU × 32 GPUs
                  cycle=30_000, warm_up=1_000)
  c.total_steps = 45_000  # README: 45K steps
  return c
