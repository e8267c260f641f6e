"""Shared bodies of the training configs in this directory (ml_collections, big_vision style).

Every knob the official experiment sets has the same value here, with a comment naming where it comes from
(NVlabs/cosmos-policy at 18a2acc, cosmos_policy/config/experiment/cosmos_policy_experiment_configs.py). A config file
builds its body with `base`, sets its own constants, and applies the variants its `get_config(arg)` was asked for;
`arg` is parsed one way everywhere, by `parse_arg`: `tiny` or `tiny,key=value,...`.
"""

from __future__ import annotations

import ast

import ml_collections

from cosmos_jax.data import bundled
from cosmos_jax.nn import lora as lora_lib
from cosmos_jax.nn import vae

ConfigDict = ml_collections.ConfigDict


def parse_arg(arg: str | None, *, name: str, **spec) -> ConfigDict:
  """`get_config`'s argument -> ConfigDict with the fields of `spec` (their defaults give the types).

  The argument is comma-separated: a bare word sets a boolean field (`tiny`), `key=value` sets any field (`value`
  read as a Python literal, else kept as a string). Anything not in `spec` is an error naming `name`'s variants.
  """
  out = ConfigDict(spec)
  for item in filter(None, (part.strip() for part in (arg or '').split(','))):
    key, has_value, text = item.partition('=')
    if key not in spec:
      raise ValueError(f'{name}: unknown variant argument {key!r} in {arg!r}; known: {sorted(spec)}')
    if not has_value:
      if not isinstance(spec[key], bool):
        raise ValueError(f'{name}: {key!r} needs a value ({key}=...), got {arg!r}')
      out[key] = True
      continue
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    try:
      out[key] = type(spec[key])(value)
    except (TypeError, ValueError) as e:
      raise ValueError(f'{name}: {key}={text!r} is not a {type(spec[key]).__name__}') from e
  return out


def schedule(cycle: int, warm_up: int) -> ConfigDict:
  """The official LambdaLinearScheduler lists: one decaying cycle, then a constant 0.06 forever."""
  return ConfigDict(dict(warm_up_steps=[warm_up, 0], cycle_lengths=[cycle, 100_000_000_000_000],
                         f_start=[1e-6, 0.06], f_max=[1.0, 0.06], f_min=[0.3, 0.06]))


def base(*, experiment: str, layout: str, batch_size: int, cycle: int, warm_up: int) -> ConfigDict:
  """The full-size recipe every benchmark shares (2B DiT, Wan2.1 VAE, the official optimiser)."""
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
  # With both copies in the init checkpoint (an official .pt/.safetensors file read directly), use the EMA weights,
  # as the official load_ema_to_reg=True; a converted checkpoint made from the regular copy of a file that also had
  # EMA weights is refused unless this is False (reconvert with `convert dit --ema`).
  c.init.ema_weights = True

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

  # LoRA fine-tuning of init.dit_checkpoint (the `lora` variants, see `lora`): adapters on the linear layers whose
  # names match `targets` (PEFT target_modules; Cosmos-Predict2's robotics post-training set, rank 24, alpha 24), the
  # base frozen and stored in `base_dtype`, the adapters trained in fp32. Checkpoints hold the adapters and a
  # reference to the base (path, step, EMA choice, content hash).
  c.lora = ConfigDict()
  c.lora.enabled = False
  c.lora.targets = lora_lib.DEFAULT_TARGETS
  c.lora.rank = lora_lib.DEFAULT_RANK
  c.lora.alpha = lora_lib.DEFAULT_ALPHA
  c.lora.dropout = 0.0
  c.lora.base_dtype = 'bfloat16'  # the frozen base's storage ('float32' keeps it exact)

  c.diffusion = ConfigDict()  # cosmos_jax.policy.diffusion.DiffusionConfig overrides
  c.diffusion.mask_loss_for_action_future_state_prediction = False  # the paper's "no auxiliary targets" ablation
  c.diffusion.mask_value_prediction_loss_for_policy_prediction = False
  c.diffusion.mask_current_state_action_for_value_prediction = False  # True for the ALOHA planning model (V(s'))
  c.diffusion.mask_future_state_for_qvalue_prediction = False  # Q(s, a) value samples: the future state withheld
  c.diffusion.action_loss_multiplier = 1  # integer weight of the action slot in the loss

  c.data = ConfigDict()
  c.data.dataset_dir = ''  # the benchmark's episodes (the tiny variants point at the bundled sample)
  # dataset_statistics.json ('' = <dataset_dir>/dataset_statistics.json; when that is absent, process 0 computes them
  # into <workdir>/assets/, the dataset folder is never written)
  c.data.statistics = ''
  c.data.text_store = ''  # safe T5 store made by `python -m cosmos_jax.data.text import` ('' = <dataset_dir>/text_store)
  c.data.t5 = ''  # converted T5 (python -m cosmos_jax.convert t5): encodes tasks missing from the store at start-up
  c.data.rollouts_dir = ''  # rollouts for world-model / value samples (see official_rollouts)
  # The rollout set the official recipe trains on ('' = none). Documentation, and the trigger of a warning naming
  # the missing sample types when rollouts_dir is left empty.
  c.data.official_rollouts = ''
  # The sample mix (official dataset arguments). An epoch is [demos | success rollouts | failure rollouts],
  # balanced so that a draw is a demo with probability p_d and a success rollout with p_s among rollouts; demo items
  # are policy samples, rollout items world-model samples with probability p_world_model, else value samples.
  c.data.demonstration_sampling_prob = 0.5  # p_d
  c.data.success_rollout_sampling_prob = 0.5  # p_s
  c.data.p_world_model = 0.5  # hard-coded 0.5 in the official ALOHA/LIBERO datasets (an argument of RoboCasa's)
  c.data.treat_demos_as_success_rollouts = False  # demos also count as success rollouts (ALOHA dataset only)
  c.data.treat_success_rollouts_as_demos = False  # successful rollouts also count as demos
  # Switches of the official datasets; every recipe keeps them on and the slot layouts assume them, so False is
  # refused (return_value_function_returns=False would also drop the value slot).
  c.data.use_proprio = True
  c.data.use_wrist_images = True
  c.data.use_third_person_images = True
  c.data.return_value_function_returns = True
  # On-disk format of dataset_dir: 'native' (the benchmark's official files), 'rlds' (a TFDS directory
  # <data_dir>/<name>/<config>/<version>, read with tfds.data_source; the rlds extra) or 'lerobot' (a LeRobot v2.1 /
  # v3.0 dataset root; the lerobot extra).
  c.data.format = 'native'
  # How a non-native format's keys feed the layout ('' = the format's default): a step key per camera role,
  # proprio, actions and instruction keys; for RLDS the demo split and an optional rollout split of the same dataset.
  c.data.features = ConfigDict(dict(
      cameras=ConfigDict(dict(image='', image2='', wrist_image='', wrist_image2='')),
      proprio='', actions='', instruction='', split='', rollout_split=''))
  # Not official: demo steps before episode_start_steps are drawn episode_start_repeats times per epoch (policy
  # samples; see cosmos_jax/data/sample.py:SampleConfig).
  c.data.episode_start_steps = 0
  c.data.episode_start_repeats = 1
  c.data.image_size = 224
  c.data.augment = True  # use_image_aug + use_stronger_image_aug
  # Keep up to this many samples' VAE latents on the host and reuse them (0 = encode every sample in the step). Only
  # with augment=False (augmented frames never repeat); pays off where the encode dominates the step (a CPU run).
  c.data.latent_cache = 0
  # Train on the text embeddings' leading non-zero tokens only (the T5 context is zero-padded to 512): the DiT then
  # accounts for the left-out zero tokens exactly (DiTConfig.text_context_tokens), and the cross-attention's k/v
  # projections run over a few tokens instead of 512 (2.5x faster steps for the small CPU model).
  c.data.trim_text_padding = True
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


def lora(c: ConfigDict) -> ConfigDict:
  """The LoRA variant: adapters trained on a frozen init.dit_checkpoint (which must be given: the base they adapt,
  e.g. the released policy or base model, or another run's workdir)."""
  c.lora.enabled = True
  c.init.from_scratch = False
  return c


def tiny(c: ConfigDict) -> ConfigDict:
  """The laptop-CPU variant: tiny DiT/VAE, 64×64 images, the layout's bundled sample, a short run.

  64 px: a latent slot (8·8·16 = 1024 values) must hold the largest action chunk (ALOHA's 50×14).
  """
  c.total_steps = 20
  c.batch_size = 2
  c.model.dit_preset = 'tiny'
  c.model.dit_overrides = ConfigDict(dict(crossattn_emb_channels=1024))  # the text store holds 1024-wide tokens
  c.model.dtype = 'float32'
  c.model.remat_policy = 'none'
  c.model.vae_base_dim = 8
  c.model.vae_dtype = 'float32'
  c.init.from_scratch = True  # no converted tiny DiT is shipped; the tiny run trains the DiT from scratch
  c.lora.base_dtype = 'float32'  # the tiny model stays in fp32 throughout
  # The official-code width-8 Wan2.1 VAE (random weights) shipped with the package; see cosmos_jax/nn/assets/.
  c.init.vae_checkpoint = str(vae.TINY_VAE_PATH)
  c.data.dataset_dir = str(bundled.sample_dir(c.layout))
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
