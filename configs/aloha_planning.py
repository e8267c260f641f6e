"""ALOHA planning model (world model + V(s')): official experiment
cosmos_predict2_2b_480p_aloha_185_demos_4_tasks_mixture_foldshirt15_candiesinbowl45_candyinbag45_eggplantchickenonplate80__resumeFrom50K_648_rollouts_Vsprime_value_func.

Initialised from the released 50K ALOHA policy checkpoint; trained on demos + rollouts; V(s') masking.
Variants: '' the official recipe; 'tiny' a laptop-CPU run on the bundled gym-aloha sample.
"""

from configs import common


def get_config(arg: str | None = None):
  variant = common.parse_arg(arg, name='configs/aloha_planning.py', tiny=False)
  c = common.base(
      experiment=('cosmos_predict2_2b_480p_aloha_185_demos_4_tasks_mixture_foldshirt15_candiesinbowl45_candyinbag45_'
                  'eggplantchickenonplate80__resumeFrom50K_648_rollouts_Vsprime_value_func'),
      layout='aloha',
      batch_size=200,
      cycle=15_000, warm_up=1_500)  # planning model: cycle 15000, warm-up 1500
  c.total_steps = 18_000  # the evaluation uses its 18K-step checkpoint
  c.diffusion.mask_current_state_action_for_value_prediction = True  # V(s'): value from the future state only
  if variant.tiny:
    c = common.tiny(c)
  return c
