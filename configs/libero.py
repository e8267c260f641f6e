"""LIBERO policy: official experiment cosmos_predict2_2b_480p_libero.

Variants: '' the official recipe.
"""

from configs import common


def get_config(arg: str | None = None):
  common.parse_arg(arg, name='configs/libero.py')
  c = common.base(experiment='cosmos_predict2_2b_480p_libero', layout='libero',
                  batch_size=1920,  # 30 per GPU × 64 GPUs
                  cycle=30_000, warm_up=1_000)
  c.total_steps = 40_000  # README: 40K steps
  return c
