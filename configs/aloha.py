"""ALOHA policy: official experiment
cosmos_predict2_2b_480p_aloha_185_demos_4_tasks_mixture_foldshirt15_candiesinbowl45_candyinbag45_eggplantchickenonplate80.

Data: the 185 demonstrations (ALOHA-Cosmos-Policy/preprocessed); no rollout set: the demos also count as success
rollouts (treat_demos_as_success_rollouts), so a draw is a policy / world-model / value sample with probability
1/2, 1/4, 1/4, and no sample comes from a failure.

Variants (`--config=configs/aloha.py:<arg>`, see common.parse_arg): '' the official recipe; 'tiny' a laptop-CPU
run on the bundled gym-aloha sample.
"""

from configs import common


def get_config(arg: str | None = None):
  variant = common.parse_arg(arg, name='configs/aloha.py', tiny=False)
  c = common.base(
      experiment=('cosmos_predict2_2b_480p_aloha_185_demos_4_tasks_mixture_foldshirt15_candiesinbowl45_candyinbag45_'
                  'eggplantchickenonplate80'),
      layout='aloha',
      batch_size=200,  # 25 per GPU × 8 GPUs
      cycle=20_000, warm_up=2_000)  # LambdaLinearScheduler cycle 20000, warm-up 2000
  c.data.treat_demos_as_success_rollouts = True  # official: include demos as success rollouts
  if variant.tiny:
    c = common.tiny(c)
  return c
