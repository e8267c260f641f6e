"""LIBERO policy: official experiment cosmos_predict2_2b_480p_libero.

Data: data.dataset_dir = LIBERO-Cosmos-Policy/success_only (the successful demos of the 4 suites) and
data.rollouts_dir = LIBERO-Cosmos-Policy/all_episodes (the demos re-rendered: successes and failures), mixed with
p_d = p_s = 0.5: a draw is a policy / world-model / value sample with probability 1/2, 1/4, 1/4. Without the rollout
set every sample is a policy sample (a warning says so).

Variants: '' the official recipe; 'tiny' a laptop-CPU run on the bundled LIBERO-format sample
(cosmos_jax/data/make_tiny_samples.py).
'lora' (combinable: 'tiny,lora') LoRA fine-tuning of init.dit_checkpoint, frozen (common.lora).
"""

from configs import common


def get_config(arg: str | None = None):
  variant = common.parse_arg(arg, name='configs/libero.py', tiny=False, lora=False)
  c = common.base(experiment='cosmos_predict2_2b_480p_libero', layout='libero',
                  batch_size=1920,  # 30 per GPU × 64 GPUs
                  cycle=30_000, warm_up=1_000)
  c.total_steps = 40_000  # README: 40K steps
  c.data.official_rollouts = 'LIBERO-Cosmos-Policy/all_episodes'
  if variant.tiny:
    c = common.tiny(c)
  if variant.lora:
    c = common.lora(c)
  return c
