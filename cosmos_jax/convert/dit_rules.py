"""The DiT's official weights: the rule table between official `MinimalV1LVGDiT` state_dict names and our
`nn.dit` params (official cosmos_policy/_src/predict2/networks/minimal_v1_lvg_dit.py:MinimalV1LVGDiT), and the
loader / exporter built on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from cosmos_jax.convert import rules as rules_lib
from cosmos_jax.nn import dit

# Per-block tensors: official suffix (after `blocks.{i}.`) -> our path under `blocks/`.
_BLOCK_TENSORS = [
    *[(f'{attn}.{p}.weight', f'{attn}/{p}/kernel', 'linear')
      for attn in ('self_attn', 'cross_attn') for p in ('q_proj', 'k_proj', 'v_proj', 'output_proj')],
    *[(f'{attn}.{n}.weight', f'{attn}/{n}/scale', 'identity')
      for attn in ('self_attn', 'cross_attn') for n in ('q_norm', 'k_norm')],
    ('mlp.layer1.weight', 'mlp/layer1/kernel', 'linear'),
    ('mlp.layer2.weight', 'mlp/layer2/kernel', 'linear'),
    *[(f'adaln_modulation_{b}.{i}.weight', f'adaln_modulation_{b}/{n}/kernel', 'linear')
      for b in ('self_attn', 'cross_attn', 'mlp') for i, n in ((1, 'down'), (2, 'up'))],
]

RULES = (
    rules_lib.Rule('x_embedder.proj.1.weight', 'x_embedder/kernel', 'linear'),
    rules_lib.Rule('t_embedder.1.linear_1.weight', 't_embedder/linear_1/kernel', 'linear'),
    rules_lib.Rule('t_embedder.1.linear_2.weight', 't_embedder/linear_2/kernel', 'linear'),
    rules_lib.Rule('t_embedding_norm.weight', 't_embedding_norm/scale'),
    *[rules_lib.Rule(f'blocks.{{i}}.{name}', f'blocks/{path}', transform) for name, path, transform in _BLOCK_TENSORS],
    rules_lib.Rule('final_layer.linear.weight', 'final_layer/linear/kernel', 'linear'),
    rules_lib.Rule('final_layer.adaln_modulation.1.weight', 'final_layer/adaln_modulation/down/kernel', 'linear'),
    rules_lib.Rule('final_layer.adaln_modulation.2.weight', 'final_layer/adaln_modulation/up/kernel', 'linear'),
)

# Official state_dict entries that are not parameters: training counters, the recomputable RoPE buffers, and
# Transformer Engine's FP8 metadata.
IGNORED_KEYS = (r'accum_.*', r'pos_embedder\..*', r'.*\._extra_state')


def load_official(cfg: dit.DiTConfig, state_dict: Mapping[str, Any], *, use_ema: bool = False,
                  where: str = '') -> dict:
  """Our params (numpy, cfg.param_dtype) from an official `MinimalV1LVGDiT` state_dict (optionally `net.`- or
  `net_ema.`-prefixed). Raises `rules.WeightLoadingError` listing every missing, unexpected or mis-shaped key."""
  view, _ = rules_lib.select_prefix(state_dict, use_ema=use_ema)
  return rules_lib.load_state_dict(RULES, view, dit.abstract_params(cfg), ignore=IGNORED_KEYS, where=where)


def export_official(params, *, prefix: str = 'net.', dtype=None) -> Mapping[str, np.ndarray]:
  """Our params -> an official-layout state_dict (parameters only; the official loader recomputes buffers)."""
  return rules_lib.export_state_dict(RULES, params, prefix=prefix, dtype=dtype)
