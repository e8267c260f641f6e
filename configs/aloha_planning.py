"""ALOHA planning model (world model + V(s')): official experiment
cosmos_predict2_2b_480p_aloha_185_demos_4_tasks_mixture_foldshirt15_candiesinbowl45_candyinbag45_eggplantchickenonplate80__resumeFrom50K_648_rollouts_Vsprime_value_func.

Initialised from the released 50K ALOHA policy checkpoint; V(s') masking. Data: the 185 demonstrations plus the
648 evaluation rollouts of Cosmos Policy, pi0.5, pi0, OpenVLA-OFT+ and Diffusion Policy (not released; JPEG frames
in the official rollout format, e.g. written by `python -m cosmos_jax.eval`), set with data.rollouts_dir. The mix
differs from the policy's: p_d = 0.1 and the demos are not success rollouts, so a draw is a policy / world-model /
value sample with probability 0.1 / 0.45 / 0.45 (half of the rollout items from failures).

Variants: '' the official recipe; 'tiny' a laptop-CPU run on the bundled gym-aloha sample (no rollouts: policy
samples only, with a warning).
'lora' (combinable: 'tiny,lora') LoRA fine-tuning of init.dit_checkpoint, frozen (common.lora).
"""

from configs import common


def get_config(arg: str | None = None):
  variant = common.parse_arg(arg, name='configs/aloha_planning.py', tiny=False, lora=False)
  c = common.base(
      experiment=('cosmos_predict2_2b_480p_aloha_185_demos_4_tasks_mixture_foldshirt15_candiesinbowl45_candyinbag45_'
                  'eggplantchickenonplate80__resumeFrom50K_648_rollouts_Vsprime_value_func'),
      layout='aloha',
      batch_size=200,
      cycle=15_000, warm_up=1_500)  # planning model: cycle 15000, warm-up 1500
  c.total_steps = 18_000  # the evaluation uses its 18K-step checkpoint
  c.diffusion.mask_current_state_action_for_value_prediction = True  # V(s'): value from the future state only
  c.data.demonstration_sampling_prob = 0.1  # official: more emphasis on rollouts
  c.data.treat_demos_as_success_rollouts = False  # official: demos have a fixed length; focus on real rollouts
  c.data.official_rollouts = 'ALOHA 648 evaluation rollouts (PATH/TO/YOUR/ROLLOUTS/DATASET, JPEG)'
  if variant.tiny:
    c = common.tiny(c)
  if variant.lora:
    c = common.lora(c)
  return c
