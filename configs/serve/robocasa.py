"""Serving a RoboCasa policy: `python -m cosmos_jax.serve http|websocket --config=configs/serve/robocasa.py[:tiny]
[--config.x=y ...]`.

The fields are configs/serve/aloha.py's with the RoboCasa request protocol (cosmos_jax.serve.protocols.robocasa:
`primary_image`, `secondary_image`, `wrist_image` of any size, flipped by the client; JPEG q95 round trip and
resize to 224 here; proprio [9]; answers 32 actions padded to the environment's 12 dimensions with the idle
mobile base, plus the 7-dim `manipulation_actions`). The sampler settings follow the official RoboCasa evaluation
command (run_robocasa_eval.py): seed 195, 5 denoising steps for the action.

The `planning` fields are ALOHA's (off).

Variants: '' the released RoboCasa policy, converted (`--checkpoint=DIR --config.model.vae=DIR`), or a training workdir;
'tiny' a random tiny policy at 32 px with stand-in statistics and a stand-in text store of a few kitchen tasks
(cosmos_jax.serve.factory.ROBOCASA_STAND_IN_TASKS; a CPU smoke run of the server).
"""

from configs import common
from configs.serve import aloha

# Official run_robocasa_eval.py command line of the released RoboCasa policy.
ACTION_STEPS = 5
SEED = 195
TINY_IMAGE_SIZE = 32  # the smallest input whose latent slot (16 * 4 * 4 values) holds the 32 x 7 actions


def get_config(arg: str | None = None):
  variant = common.parse_arg(arg, name='configs/serve/robocasa.py', tiny=False)
  c = aloha.get_config()
  c.layout = 'robocasa'
  c.model.action_steps = ACTION_STEPS
  c.model.seed = SEED
  if variant.tiny:
    c.model.tiny = True
    c.model.image_size = TINY_IMAGE_SIZE
    c.model.action_steps = 1
  return c
