"""Shared builder of the training configs in `configs/` (ml_collections, big_vision style).

Every knob the official experiment sets has the same value here, with a comment naming where it comes from
(policy_spec section 1 for per-benchmark constants, section 7 for the optimiser and schedule). The `tiny`
variant swaps in the golden-vector-sized DiT and VAE and the bundled ALOHA sample so it trains on a laptop CPU.
"""

from __future__ import annotations

import pathlib

import ml_collections

from cosmos_jax.nn import vae

ConfigDict = ml_collections.ConfigDict

# The bundled ALOHA-simulator sample: the default data of the tiny configs.
BUNDLED_SAMPLE_DIR = pathlib.Path(__file__).resolve().parents[1] / 'data' / 'sample_aloha'


def schedule(cycle: int, warm_up: int) -> ConfigDict:
  """The official LambdaLinearScheduler lists: one decaying cycle, then a constant 0.06 forever."""
  return ConfigDict(dict(warm_up_steps=[warm_up, 0], cycle_lengths=[cycle, 100_000_000_000_000],
                         f_start=[1e-6, 0.06], f_max=[1.0, 0.06], f_min=[0.3, 0.06]))


def base_config(*, experiment: str, layout: str, batch_size: int, cycle: int, warm_up: int) -> ConfigDict:
  c = ConfigDict()
  c.experiment = experiment  # the official experiment this config mirrors
  c.layout = layout  # cosmos_jax.policy.layout.LAYOUTS key
  c.seed = 0  # official trainer seed
  c.total_steps = 50_000  # run length (the released ALOHA checkpoint is from step 50K; official max_iter is 1e6)
  c.batch_size = batch_size  # global batch (paper: per-GPU batch × GPUs × grad-accum)

  c.model = ConfigDict()
  c.model.dit_preset = '2B'  # Cosmos-Predict2-2B-Video2World
  c.model.dit_overrides = ConfigDict()  # DiTConfig fields changed from the preset (tiny variant)
  c.model.dtype = 'bfloat16'  # official precision "bfloat16": bf16 activations
  c.model.param_dtype = 'float32'  # fp32 master weights (FusedAdam masters)
  c.model.attention = 'xla'  # or 'cudnn' on GPU
  # Full rematerialisation of each block: the official run fits 25 samples per 80 GB GPU with selective checkpointing
  # (sac_config predict2_2b_720); saving every projection ('dots_no_batch') costs ~5× more activation memory per
  # sample (benchmarks/train_memory.py --remat full dots_no_batch).
  c.model.remat_policy = 'full'
  c.model.vae_base_dim = 96  # Wan2.1 VAE
  c.model.vae_dtype = 'bfloat16'  # the policy runs the tokenizer in bf16 with bf16-rounded latent statistics

  c.init = ConfigDict()
  # Converted checkpoints (python -m cosmos_jax.convert ...). The official run starts from the EMA weights of
  # Cosmos-Predict2-2B-Video2World model-480p-16fps.pt (load_ema_to_reg). A configured path that does not exist
  # is an error; training from scratch must be asked for explicitly.
  c.init.dit_checkpoint = ''
  c.init.vae_checkpoint = ''
  c.init.from_scratch = False

  c.optim = ConfigDict()
  c.optim.lr = 1e-4  # official lr
  c.optim.b1 = 0.9  # betas (0.9, 0.99)
  c.optim.b2 = 0.99
  c.optim.eps = 1e-8
  c.optim.weight_decay = 0.1  # on all parameters
  c.optim.clip_norm = 1.0  # global L2 norm, after nan_to_num
  c.optim.grad_accum_steps = 1
  c.optim.ema_decay = 0.0  # official ema.enabled = False; > 0 keeps an EMA of the parameters
  c.optim.schedule = schedule(cycle, warm_up)

  c.diffusion = ConfigDict()  # cosmos_jax.policy.diffusion.DiffusionConfig overrides (policy_spec 5.3, 6)
  c.diffusion.mask_loss_for_action_future_state_prediction = False  # the paper's "no auxiliary targets" ablation
  c.diffusion.mask_value_prediction_loss_for_policy_prediction = False
  c.diffusion.mask_current_state_action_for_value_prediction = False  # True for the ALOHA planning model (V(s'))

  c.data = ConfigDict()
  c.data.dataset_dir = ''  # '' = the bundled sample (tiny runs only)
  c.data.statistics = ''  # dataset_statistics.json ('' = <dataset_dir>/dataset_statistics.json)
  c.data.text_store = ''  # safe T5 store made by `python -m cosmos_jax.data.text import`
  c.data.rollouts_dir = ''  # rollouts for world-model / value samples (planning model)
  c.data.image_size = 224
  c.data.augment = True  # use_image_aug + use_stronger_image_aug
  c.data.num_workers = 2
  c.data.prefetch = 2

  c.mesh = ConfigDict()
  c.mesh.data = -1  # whatever fsdp leaves
  c.mesh.fsdp = 8  # official FSDP shard 8

  c.checkpoint = ConfigDict()
  c.checkpoint.every_steps = 1000  # official: every 1000 iterations
  c.checkpoint.max_to_keep = 3
  c.checkpoint.keep_period = 10_000
  c.checkpoint.async_save = True

  c.log = ConfigDict()
  c.log.every_steps = 10
  c.log.image_every_steps = 1000  # PNG grid of current vs predicted future frames + predicted value
  c.log.sample_steps = 5  # sampler steps for the logged predictions
  c.log.device_peak_tflops = 0.0  # 0 = look up from the device kind
  return c


def make_tiny(c: ConfigDict) -> ConfigDict:
  """The laptop-CPU variant: tiny DiT/VAE, 64×64 images, the bundled ALOHA sample, a short run."""
  c.total_steps = 20
  c.batch_size = 2
  c.model.dit_preset = 'tiny'
  c.model.dit_overrides = ConfigDict(dict(crossattn_emb_channels=1024))  # the text store holds 1024-wide tokens
  c.model.dtype = 'float32'
  c.model.remat_policy = 'none'
  c.model.vae_base_dim = 8
  c.model.vae_dtype = 'float32'
  c.init.from_scratch = True  # no converted tiny DiT is shipped; the tiny run trains the DiT from scratch
  # The official-code width-8 Wan2.1 VAE (random weights) shipped with the package; see cosmos_jax/nn/assets/.
  c.init.vae_checkpoint = str(vae.TINY_VAE_PATH)
  c.data.image_size = 64
  c.data.num_workers = 0
  c.mesh.fsdp = 1
  c.optim.schedule = schedule(100, 5)
  c.checkpoint.every_steps = 10
  c.checkpoint.keep_period = 0
  c.log.every_steps = 1
  c.log.image_every_steps = 10
  c.log.sample_steps = 2
  return c
