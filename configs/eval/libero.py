"""Closed-loop LIBERO evaluation: `python -m cosmos_jax.eval.libero_sim --config=configs/eval/libero.py[:tiny]
--config.out=DIR [--config.x=y ...]`.

Variants (common.parse_arg): '' the official evaluation (run_libero_eval.py) of a policy checkpoint: a training
workdir (`--checkpoint=WORKDIR`, = `--config.policy.checkpoint`) or a converted release (plus
`--config.policy.vae=...`), or of a served policy (`--config.server=ws://HOST:PORT` or `http://HOST:8777`): the
four suites, every task, the 50 fixed initial states, 256 px cameras, the whole chunk of 16 executed per query,
5 action denoising steps, seed 195. 'tiny' the random tiny policy at 32 px, one task, one episode of 24 steps at
64 px cameras (a smoke run of the whole loop in the real simulator).

The simulator runs in its own environment (cosmos_jax.eval.libero_sim_env): `sim_python` or
$COSMOS_JAX_LIBERO_PYTHON.
"""

import ml_collections
from ml_collections import config_dict

from configs import common


def get_config(arg: str | None = None):
  variant = common.parse_arg(arg, name='configs/eval/libero.py', tiny=False)
  c = ml_collections.ConfigDict()
  c.suites = ('libero_spatial', 'libero_object', 'libero_goal', 'libero_10')
  c.tasks = ()  # task indices of each suite ('' = all 10), e.g. --config.tasks=0,3
  c.episodes_per_task = 50  # initial states 0..n-1 of the task's 50 fixed ones (official: all 50)
  c.max_steps = 0  # 0 = the suite's official maximum (220 / 280 / 300 / 520); smaller for short runs
  c.num_open_loop_steps = 16  # official: the whole chunk
  c.resolution = 256  # camera size (official env_img_res)
  c.env_seed = 0  # official get_libero_env: env.seed(0)
  c.image_size = 224  # policy input size (official)
  c.out = ''  # output directory (required)
  c.server = ''  # a served policy: ws://HOST:PORT or http://HOST:8777 (overrides policy.kind)
  c.sim_python = ''  # the LIBERO environment's Python ('' = $COSMOS_JAX_LIBERO_PYTHON)

  c.policy = ml_collections.ConfigDict()
  c.policy.kind = 'checkpoint'  # 'checkpoint' | 'tiny' | 'server'
  c.policy.checkpoint = ''  # checkpoint: a training workdir or checkpoint directory, or a converted release
  c.policy.step = config_dict.placeholder(int)  # checkpoint: training step (None: the latest)
  c.policy.use_ema = config_dict.placeholder(bool)  # checkpoint: None = the EMA parameters when the run kept them
  c.policy.vae = ''  # checkpoint: converted VAE or official file ('' = the one the run trained with)
  c.policy.statistics = ''  # checkpoint: dataset_statistics.json ('' = the checkpoint's)
  c.policy.text_store = ''  # checkpoint: text store directory ('' = the checkpoint's)
  c.policy.merge_lora = True  # checkpoint: a LoRA checkpoint's adapters merged at load (False: kept separate)
  c.policy.lora_base = ''  # checkpoint: a LoRA checkpoint's base at another path ('' = the recorded one)
  c.policy.action_steps = 5  # official num_denoising_steps_action
  c.policy.seed = 195  # official seed
  c.policy.tiny_seed = 0  # tiny: seed of the random weights
  c.policy.server = ''  # server: the URL (same as config.server)

  if variant.tiny:
    c.policy.kind = 'tiny'
    c.policy.action_steps = 1
    c.suites = ('libero_spatial',)
    c.tasks = (0,)
    c.episodes_per_task = 1
    c.max_steps = 24  # two queries of 16 actions (the second executes 8)
    c.resolution = 64
    c.image_size = 32  # the smallest input whose latent slot (16 * 4 * 4 values) holds the 16 x 7 actions
  return c
