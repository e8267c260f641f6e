"""ALOHA policy: official experiment
cosmos_predict2_2b_480p_aloha_185_demos_4_tasks_mixture_foldshirt15_candiesinbowl45_candyinbag45_eggplantchickenonplate80.

Data: the 185 demonstrations (ALOHA-Cosmos-Policy/preprocessed); no rollout set: the demos also count as success
rollouts (treat_demos_as_success_rollouts), so a draw is a policy / world-model / value sample with probability
1/2, 1/4, 1/4, and no sample comes from a failure.

Variants (`--config=configs/aloha.py:<arg>`, see common.parse_arg): '' the official recipe; 'tiny' a laptop-CPU
run on the bundled gym-aloha sample; 'small' learning from scratch on a CPU (benchmarks/learn_sim.py): the tiny
variant's VAE, images and data with a wider, deeper DiT (on a CPU the step time is the VAE encoding of every
sample, so the extra DiT width costs little), a learning rate held, then decayed to a tenth, and sparse logging and
checkpoints for runs bounded by wall time rather than steps.
'lora' (combinable: 'tiny,lora') LoRA fine-tuning of init.dit_checkpoint, frozen (common.lora).
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None):
  variant = common.parse_arg(arg, name='configs/aloha.py', tiny=False, small=False, lora=False)
  c = common.base(
      experiment=('cosmos_predict2_2b_480p_aloha_185_demos_4_tasks_mixture_foldshirt15_candiesinbowl45_candyinbag45_'
                  'eggplantchickenonplate80'),
      layout='aloha',
      batch_size=200,  # 25 per GPU × 8 GPUs
      cycle=20_000, warm_up=2_000)  # LambdaLinearScheduler cycle 20000, warm-up 2000
  c.data.treat_demos_as_success_rollouts = True  # official: include demos as success rollouts
  if variant.tiny or variant.small:
    c = common.tiny(c)
  if variant.small:
    c.model.dit_overrides = ml_collections.ConfigDict(dict(
        crossattn_emb_channels=1024, model_channels=128, num_blocks=4, num_heads=4, adaln_lora_dim=32))
    c.total_steps = 200_000  # learn_sim stops the run by wall time
    # The simulator renders the training seeds' scenes exactly, so memorising them needs no augmentation; without
    # it every sample's frames repeat each epoch and their VAE latents are encoded once (train/latent_cache.py).
    c.data.augment = False
    c.data.latent_cache = 20_000
    c.batch_size = 8  # 0.21 s per step on 2 cores once the latents are cached (batch 2: 0.07 s)
    c.optim.ema_decay = 0.999  # the evaluation reads the EMA parameters (averages out batch-to-batch noise)
    c.optim.lr = 5e-4  # from scratch, not fine-tuning
    # Every simulated episode starts from the same arm pose, so at its first steps only the cube's place in the
    # cameras tells the demonstrations' action chunks apart: draw those steps 30x as often (about 40% of the samples
    # of 400-step episodes), and weigh the action slot 20x (the official action_loss_multiplier) against the future
    # images a random-weight VAE makes hard to predict. benchmarks/learn_sim.py also standardises that VAE's latents
    # on the demonstrations.
    c.data.episode_start_steps = 10
    c.data.episode_start_repeats = 30
    c.diffusion.action_loss_multiplier = 20
    # Warm-up, stable, decay: 100 warm-up steps, the full rate to step 12k, a linear decay to a tenth at step 22k,
    # then a tenth (a 60-minute CPU run makes about 26k steps). At a constant rate the first query of a scene follows
    # the majority demonstration whatever the cube's place; 2.5k steps at a tenth made it follow the scene's own.
    c.optim.schedule = ml_collections.ConfigDict(dict(
        warm_up_steps=[100, 0, 0], cycle_lengths=[12_000, 10_000, 10**14], f_start=[1e-6, 1.0, 0.1],
        f_max=[1.0, 1.0, 0.1], f_min=[1.0, 0.1, 0.1]))
    c.checkpoint.every_steps = 50
    c.checkpoint.max_to_keep = 2
    c.log.every_steps = 10
    c.log.image_every_steps = 0
  if variant.lora:
    c = common.lora(c)
  return c
