"""Serving an ALOHA policy: `python -m cosmos_jax.serve http|websocket --config=configs/serve/aloha.py[:variant]
[--config.x=y ...]`.

Variants (common.parse_arg): '' a policy checkpoint, settings of the official deploy.py: a training workdir
(`--config.model.checkpoint=WORKDIR`, or the shorthand `--checkpoint=WORKDIR`; its latest step and, when the run
kept one, its EMA parameters) or a converted release (`--checkpoint=DIR --config.model.vae=DIR`); 'tiny' a random
tiny policy on the bundled sample at 64 px (task 'transfer cube'; a CPU smoke run of the whole server); 'planning'
turns on best-of-N planning with the main ALOHA planning command (combine: 'tiny,planning'); 'depth3' the official
depth-3 planning command (no ensembles, search depth 3).

Planning options are those of the official deploy.py (its names in the comments). An ensemble size of 0 is the
official "ensemble off": one sample at the full step count. V(s') masking is on by default only with a planning
model (planning.checkpoint), as in the official planning commands; the official default is off.

Every field of the former argparse command has a field here: --host -> host, --port -> port, --tiny -> model.tiny,
--tiny-image-size -> model.image_size, --tiny-seed -> model.tiny_seed, --dit -> model.checkpoint,
--vae/--statistics/--text-store/--t5 -> model.<same>, --dtype/--attention -> model.dtype/attention,
--action-steps -> model.action_steps, --seed -> model.seed, --no-future-images -> model.future_images=False,
--planning -> planning.enabled, --planning-dit -> planning.checkpoint, the other planning flags ->
planning.<name>, --max-payload-mb/--max-queue/--deadline-s/--body-timeout-s -> serving.<name>, --no-warmup ->
serving.warmup=False; --value-of-state-action -> planning.value_of_future_state=False.
"""

import ml_collections
from ml_collections import config_dict

from configs import common


def get_config(arg: str | None = None):
  variant = common.parse_arg(arg, name='configs/serve/aloha.py', tiny=False, planning=False, depth3=False)
  c = ml_collections.ConfigDict()
  c.layout = 'aloha'  # request protocol (cosmos_jax.serve.protocols) and slot layout
  c.host = '0.0.0.0'
  c.port = config_dict.placeholder(int)  # None: 8777 for http (official deploy.py), 8000 for websocket; 0: any free

  c.model = ml_collections.ConfigDict()
  c.model.tiny = False  # a random tiny policy on the bundled sample instead of converted checkpoints
  c.model.tiny_seed = 0  # tiny: seed of the random weights
  # The policy: a training workdir or checkpoint directory, or a converted release (convert dit --layout ...).
  c.model.checkpoint = ''
  c.model.step = config_dict.placeholder(int)  # training step (None: the latest)
  c.model.use_ema = config_dict.placeholder(bool)  # None: the EMA parameters when the run kept an EMA
  c.model.vae = ''  # converted Wan2.1 VAE or official file ('' = the one the run trained with)
  c.model.statistics = ''  # dataset_statistics.json ('' = the checkpoint's)
  c.model.text_store = ''  # text store directory ('' = the checkpoint's)
  # A LoRA checkpoint: adapters merged into their base at load (fast), or False: kept beside the base's kernels.
  c.model.merge_lora = True
  c.model.lora_base = ''  # a LoRA checkpoint's base at another path ('' = the recorded one; its hash is checked)
  c.model.t5 = ''  # converted T5 encoder (convert t5 ...): tasks missing from the text store encoded on first use
  c.model.dtype = ''  # DiT activation dtype, 'float32' | 'bfloat16' ('' = as converted; the release runs bfloat16)
  c.model.attention = ''  # DiT attention, 'xla' | 'cudnn' ('' = as converted)
  c.model.image_size = 224  # official policy input size
  c.model.action_steps = 10  # sampler steps of the action query without planning (official deploy.py)
  c.model.seed = 195  # noise seed, the same at every request (official seed 195, randomize_seed False)
  c.model.randomize_seed = False  # official randomize_seed: every sampler run draws a fresh seed in [0, 256)
  c.model.use_variance_scale = False  # official use_variance_scale: a random sigma range per seed
  c.model.future_images = True  # decode future_image_predictions

  c.planning = ml_collections.ConfigDict()  # best-of-N; defaults: the main ALOHA planning command
  c.planning.enabled = False
  c.planning.checkpoint = ''  # the planning model, like model.checkpoint ('' = the policy does everything)
  c.planning.step = config_dict.placeholder(int)
  c.planning.use_ema = config_dict.placeholder(bool)
  c.planning.devices = 0  # spread the candidates over this many local devices (0: all; use_parallel_inference)
  c.planning.num_candidates = 8  # N (num_queries_best_of_n)
  c.planning.action_steps = 10  # num_denoising_steps_action
  c.planning.predict_future = True  # world-model queries (ar_future_prediction)
  # How candidates are scored: 'future_state' (V of the predicted future, ar_value_prediction), 'q_value'
  # (Q(s, a) of the action sample, ar_qvalue_prediction) or 'parallel' (the policy's own value; with
  # predict_future=False).
  c.planning.value = 'future_state'
  c.planning.future_steps = 5  # num_denoising_steps_future_state; members: linspace(1, this, future_ensemble)
  c.planning.future_ensemble = 3  # num_future_state_predictions_in_ensemble (0: ensemble off)
  c.planning.future_aggregation = 'average'  # returned images of the ensemble: 'average' | 'last'
  c.planning.value_steps = 5  # num_denoising_steps_value; members: linspace(1, this, value_ensemble)
  c.planning.value_ensemble = 5  # num_value_predictions_in_ensemble (0: ensemble off, one value)
  c.planning.aggregation = 'majority_mean'  # 'average' | 'lcb' | 'success_vote' | 'majority_mean'
  # V(s') masking (mask_current_state_action_for_value_prediction); None: on with planning.checkpoint, else off.
  c.planning.value_of_future_state = config_dict.placeholder(bool)
  c.planning.q_value_mask_future_state = False  # mask_future_state_for_qvalue_prediction
  c.planning.search_depth = 1
  c.planning.depth_aggregation = 'use_last_value'  # search_depth_value_aggregation_scheme: or 'average'

  c.serving = ml_collections.ConfigDict()
  c.serving.max_payload_mb = 16.0  # three 224 px images are ~0.6 MB as base64 JSON
  c.serving.max_queue = 8  # requests allowed to WAIT for the model; more get 503 + Retry-After / an error frame
  c.serving.deadline_s = 60.0  # a request not started this long after queuing gets 504 and is never run
  c.serving.body_timeout_s = 30.0  # HTTP: a body not received within this gets 408 and the connection closes
  c.serving.warmup = True  # compile every program before accepting requests

  if variant.tiny:
    c.model.tiny = True
    c.model.image_size = 64  # the smallest size whose latent slot holds the 700 ALOHA action values
    c.model.action_steps = 3
  if variant.planning or variant.depth3:
    c.planning.enabled = True
  if variant.depth3:  # the official depth-3 command: ensembles off, search depth 3, use_last_value
    c.planning.future_ensemble = 0
    c.planning.value_ensemble = 0
    c.planning.aggregation = 'average'
    c.planning.search_depth = 3
  return c
