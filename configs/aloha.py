"""ALOHA policy: official experiment
cosmos_predict2_2b_480p_aloha_185_demos_4_tasks_mixture_foldshirt15_candiesinbowl45_candyinbag45_eggplantchickenonplate80.

Variants (`--config=configs/aloha.py:<arg>`): '' the official recipe; 'tiny' a laptop-CPU run on the bundled sample.
"""

from cosmos_jax.train import config_lib


def get_config(arg: str | None = None):
  c = config_lib.base_config(
      experiment=('cosmos_predict2_2b_480p_aloha_185_demos_4_tasks_mixture_foldshirt15_candiesinbowl45_candyinbag45_'
                  'eggplantchickenonplate80'),
      layout='aloha',
      batch_size=200,  # 25 per GPU × 8 GPUs
      cycle=20_000, warm_up=2_000)  # LambdaLinearScheduler cycle 20000, warm-up 2000
  if arg == 'tiny':
    c = config_lib.make_tiny(c)
  elif arg:
    raise ValueError(f"unknown variant {arg!r} of configs/aloha.py (known: '', 'tiny')")
  return c
