"""Serving a LIBERO policy: `python -m cosmos_jax.serve http|websocket --config=configs/serve/libero.py[:tiny]
[--config.x=y ...]`.

The fields are configs/serve/aloha.py's with the LIBERO request protocol (cosmos_jax.serve.protocols.libero:
`primary_image`, `wrist_image` of any size, flipped by the client; JPEG q95 round trip and resize to 224 here;
proprio [9]; answers a chunk of 16 x 7 actions). The sampler settings follow the official LIBERO evaluation
command (run_libero_eval.py): seed 195, 5 denoising steps for the action (`num_denoising_steps_action`).

The `planning` fields are ALOHA's (off); LIBERO's released evaluation runs without planning.

Variants: '' the released LIBERO policy, converted (`--checkpoint=DIR --config.model.vae=DIR`), or a training workdir;
'tiny' a random tiny policy at 32 px with stand-in statistics and a stand-in text store of the 40 tasks of
libero_spatial/object/goal/10 (a CPU smoke run of the whole server and of `eval.libero_sim`).
"""

from configs import common
from configs.serve import aloha

# Official run_libero_eval.py command line of the released LIBERO policy.
ACTION_STEPS = 5
SEED = 195
TINY_IMAGE_SIZE = 32  # the smallest input whose latent slot (16 * 4 * 4 values) holds the 16 x 7 actions


def get_config(arg: str | None = None):
  variant = common.parse_arg(arg, name='configs/serve/libero.py', tiny=False)
  c = aloha.get_config()
  c.layout = 'libero'
  c.model.action_steps = ACTION_STEPS
  c.model.seed = SEED
  if variant.tiny:
    c.model.tiny = True
    c.model.image_size = TINY_IMAGE_SIZE
    c.model.action_steps = 1
  return c
