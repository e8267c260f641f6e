"""Closed-loop evaluation in the gym-aloha simulator:
`python -m cosmos_jax.eval.aloha_sim --config=configs/eval/aloha.py[:variant] --config.out=DIR [--config.x=y ...]`.

Variants (common.parse_arg): '' the official ALOHA client's settings, for a policy checkpoint: a training workdir
(`--checkpoint=WORKDIR`, = `--config.policy.checkpoint`) or a converted release (plus `--config.policy.vae=...`);
'tiny' the random tiny policy for one short episode at 64 px (a CPU smoke run of the whole loop).
"""

import ml_collections
from ml_collections import config_dict

from configs import common


def get_config(arg: str | None = None):
  variant = common.parse_arg(arg, name='configs/eval/aloha.py', tiny=False)
  c = ml_collections.ConfigDict()
  c.task = 'transfer_cube'  # or 'insertion' (cosmos_jax.data.simulator.TASKS)
  c.task_description = ''  # text sent to the policy ('' = the task's own); must be in the policy's text store
  c.episodes = 10
  c.seed = 0  # episode i uses seed + i for the object poses (gym-aloha's sampling)
  c.seeds = ()  # explicit seeds instead of seed/episodes, e.g. --config.seeds=3,7,11
  c.max_steps = 400  # control steps per episode (ACT's simulated tasks; gym-aloha registers 300)
  c.num_open_loop_steps = 50  # official ALOHA client: actions executed per query
  c.control_hz = 50.0  # gym-aloha's rate (its demos are 50 Hz); real ALOHA and the official client run at 25
  c.out = ''  # output directory (required)
  c.image_size = 224  # policy input size (official)
  c.preprocess_size = 256  # official ALOHA client: 480x640 -> 256 -> image_size
  c.render_height = 480  # the ALOHA cameras' size
  c.render_width = 640

  c.policy = ml_collections.ConfigDict()
  c.policy.kind = 'checkpoint'  # 'checkpoint' | 'tiny' | 'server' | 'replay'
  c.policy.checkpoint = ''  # checkpoint: a training workdir or checkpoint directory, or a converted release
  c.policy.step = config_dict.placeholder(int)  # checkpoint: training step (None: the latest)
  c.policy.use_ema = config_dict.placeholder(bool)  # checkpoint: None = the EMA parameters when the run kept them
  c.policy.vae = ''  # checkpoint: converted VAE or official file ('' = the one the run trained with)
  c.policy.planning_checkpoint = ''  # checkpoint: the planning model for best-of-N planning ('' = none)
  c.policy.statistics = ''  # checkpoint: dataset_statistics.json ('' = the checkpoint's)
  c.policy.text_store = ''  # checkpoint: text store directory ('' = the checkpoint's)
  c.policy.merge_lora = True  # checkpoint: a LoRA checkpoint's adapters merged at load (False: kept separate)
  c.policy.lora_base = ''  # checkpoint: a LoRA checkpoint's base at another path ('' = the recorded one)
  c.policy.tiny_seed = 0  # tiny: seed of the random weights
  c.policy.server = ''  # server: http://HOST:8777 (official /act protocol) or ws://HOST:PORT (websocket)
  c.policy.demos = ''  # replay: demonstrations (ALOHA format with seeds) whose recorded actions are replayed
  c.policy.chunk_size = 50  # replay: actions answered per query (set num_open_loop_steps to the same)

  if variant.tiny:
    c.policy.kind = 'tiny'
    c.episodes = 1
    c.max_steps = 8
    c.num_open_loop_steps = 4
    c.image_size = 64  # the smallest size whose latent slot holds the 700 ALOHA action values (VAE stride 8)
    c.preprocess_size = 64
    c.render_height = 64
    c.render_width = 64
  return c
