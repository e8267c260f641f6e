"""RoboCasa policy: official experiment cosmos_predict2_2b_480p_robocasa_50_demos_per_task.

Data: data.dataset_dir = RoboCasa-Cosmos-Policy/success_only (50 successful demos per task) and
data.rollouts_dir = RoboCasa-Cosmos-Policy/all_episodes (successes and failures), mixed with p_d = p_s = 0.5 and
p_world_model = 0.5: a draw is a policy / world-model / value sample with probability 1/2, 1/4, 1/4. Without the
rollout set every sample is a policy sample (a warning says so).

Variants: '' the official recipe; 'tiny' a laptop-CPU run on the bundled RoboCasa-format sample
(cosmos_jax/data/make_tiny_samples.py).
'lora' (combinable: 'tiny,lora') LoRA fine-tuning of init.dit_checkpoint, frozen (common.lora).
"""

from configs import common


def get_config(arg: str | None = None):
  variant = common.parse_arg(arg, name='configs/robocasa.py', tiny=False, lora=False)
  c = common.base(experiment='cosmos_predict2_2b_480p_robocasa_50_demos_per_task', layout='robocasa',
                  batch_size=800,  # 25 per GPU × 32 GPUs
                  cycle=30_000, warm_up=1_000)
  c.total_steps = 45_000  # README: 45K steps
  c.data.official_rollouts = 'RoboCasa-Cosmos-Policy/all_episodes'
  if variant.tiny:
    c = common.tiny(c)
  if variant.lora:
    c = common.lora(c)
  return c
