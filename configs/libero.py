"""LIBERO policy: official experiment cosmos_predict2_2b_480p_libero."""

from cosmos_jax.train import config_lib


def get_config(arg: str | None = None):
  c = config_lib.base_config(experiment='cosmos_predict2_2b_480p_libero', layout='libero',
                             batch_size=1920,  # 30 per GPU × 64 GPUs
                             cycle=30_000, warm_up=1_000)
  c.total_steps = 40_000  # README: 40K steps
  if arg == 'tiny':
    raise ValueError('configs/libero.py has no tiny variant: the bundled sample is ALOHA; use configs/aloha.py:tiny')
  if arg:
    raise ValueError(f"unknown variant {arg!r} of configs/libero.py (known: '')")
  return c
