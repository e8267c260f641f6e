"""Released PyTorch checkpoints <-> our orbax params checkpoints: the library behind `python -m cosmos_jax.convert`
(the command line is cosmos_jax/convert/__main__.py).

Conversion streams: the source is read tensor by tensor through a lazy mapping (`torch_io`) into the rule table of
the model (`dit_rules.py`, `vae_rules.py`, `t5_rules.py`), validated against `jax.eval_shape` of our model; every
missing, unexpected or mis-shaped key is reported in one error. Nothing is written unless everything loads.

Dtypes: by default the parameters keep the stored dtype (the released DiT checkpoints are bfloat16); `float32`
upcasts (exact), `bfloat16` rounds. A stored dtype the model cannot hold (float16, mixed dtypes) needs an explicit
dtype. The abstract params are built in the chosen dtype, so nothing is cast behind your back.

The output directory has the one checkpoint layout (see `checkpoint.py`): `params/` (orbax) and `assets/` with
`config.json` (model kind, model config, layout, provenance) and, for a policy, `dataset_statistics.json` and
`text_store/`; a training run writes the same layout with training state added.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from cosmos_jax.convert import checkpoint
from cosmos_jax.convert import dit_rules
from cosmos_jax.convert import rules as rules_lib
from cosmos_jax.convert import t5_rules
from cosmos_jax.convert import torch_io
from cosmos_jax.convert import vae_rules
from cosmos_jax.data import stats as stats_lib
from cosmos_jax.data import text as text_lib
from cosmos_jax.nn import dit
from cosmos_jax.nn import lora as lora_lib
from cosmos_jax.nn import t5
from cosmos_jax.nn import vae

FORMAT = checkpoint.FORMAT
STATISTICS_ASSET = checkpoint.STATISTICS_ASSET
TEXT_STORE_ASSET = checkpoint.TEXT_STORE_ASSET
PARAM_DTYPES = ('float32', 'bfloat16')
EXPORT_DTYPES = ('float32', 'bfloat16', 'float16')
_NUMPY_DTYPES = {'float32': np.dtype(np.float32), 'bfloat16': np.dtype(ml_dtypes.bfloat16),
                 'float16': np.dtype(np.float16), 'float64': np.dtype(np.float64)}


# --------------------------------------------------------------------------------------------------------------
# Per-model adapters: how to build the config, the rule table and the abstract params.


@dataclasses.dataclass(frozen=True)
class ModelKind:
  name: str
  rules: Callable[[Any], Sequence[rules_lib.Rule]]
  abstract_params: Callable[[Any], Any]
  ignore: tuple[str, ...]  # official keys deliberately dropped
  prefixes: bool  # whether model-level `net.` / `net_ema.` prefixes apply
  export_prefix: str
  with_param_dtype: Callable[[Any, str], Any]
  config_to_dict: Callable[[Any], dict]
  config_from_dict: Callable[[Mapping[str, Any]], Any]
  # Opens the source (a file, or a model folder) as a lazy state_dict with `.info(name)`.
  open_source: Callable[[Any], Any] = torch_io.open_state_dict


KINDS = {
    'dit': ModelKind(
        name='dit', rules=lambda cfg: dit_rules.RULES, abstract_params=dit.abstract_params,
        ignore=tuple(dit_rules.IGNORED_KEYS), prefixes=True, export_prefix='net.',
        with_param_dtype=lambda cfg, dtype: dataclasses.replace(cfg, param_dtype=dtype),
        config_to_dict=lambda cfg: checkpoint.model_config_to_dict('dit', cfg),
        config_from_dict=lambda d: checkpoint.model_config_from_dict('dit', d)),
    'vae': ModelKind(
        name='vae', rules=vae_rules.rules, abstract_params=vae.abstract_params,
        ignore=(), prefixes=False, export_prefix='',
        with_param_dtype=lambda cfg, dtype: dataclasses.replace(cfg, dtype=getattr(jnp, dtype)),
        config_to_dict=lambda cfg: checkpoint.model_config_to_dict('vae', cfg),
        config_from_dict=lambda d: checkpoint.model_config_from_dict('vae', d)),
    't5': ModelKind(
        name='t5', rules=t5_rules.t5_rules, abstract_params=t5.abstract_params,
        ignore=t5_rules.T5_IGNORED_KEYS, prefixes=False, export_prefix='',
        with_param_dtype=lambda cfg, dtype: dataclasses.replace(cfg, param_dtype=dtype),
        config_to_dict=lambda cfg: checkpoint.model_config_to_dict('t5', cfg),
        config_from_dict=lambda d: checkpoint.model_config_from_dict('t5', d),
        open_source=t5_rules.open_hf_weights),
}


def _official_kwargs(path: str, wrapper_key: str) -> dict:
  """Official constructor kwargs from a JSON file: either the kwargs themselves or a golden-style config.json
  holding them under `wrapper_key`."""
  try:
    raw = json.loads(pathlib.Path(path).read_text(encoding='utf-8'))
  except FileNotFoundError:
    raise FileNotFoundError(f'model config file not found: {path}') from None
  except json.JSONDecodeError as e:
    raise ValueError(f'{path}: not valid JSON ({e})') from None
  if not isinstance(raw, dict):
    raise ValueError(f'{path}: expected a JSON object of constructor arguments')
  return raw.get(wrapper_key, raw)


def dit_config(preset: str | None = None, config_path: str | None = None) -> dit.DiTConfig:
  """From official constructor kwargs (a JSON file) or a preset name; the default is the 2B preset."""
  if config_path and preset:
    raise ValueError(f'give either --preset ({preset}) or --config ({config_path}), not both')
  if config_path:
    return dit.DiTConfig.from_official(_official_kwargs(config_path, 'constructor_kwargs'))
  return dit.DiTConfig.preset(preset or '2B')


def vae_config(config_path: str | None = None) -> vae.VAEConfig:
  if config_path:
    return vae.VAEConfig.from_official(_official_kwargs(config_path, 'constructor_args'))
  return vae.VAEConfig.wan21()


# --------------------------------------------------------------------------------------------------------------
# Conversion.


def _dtype_name(dtype: np.dtype) -> str:
  return np.dtype(dtype).name


def resolve_param_dtype(requested: str, stored: Mapping[str, np.dtype], *, where: str) -> str:
  """The parameter dtype of the converted model: the stored one ('keep'), or the one asked for.

  Raises ValueError for non-float parameters, and for 'keep' with mixed or unsupported stored dtypes.
  """
  names = {key: _dtype_name(d) for key, d in stored.items()}
  non_float = sorted(f'{k} ({n})' for k, n in names.items() if n not in _NUMPY_DTYPES)
  if non_float:
    raise ValueError(f'{where}: parameters must be floating point; got {non_float[:10]}')
  if requested != 'keep':
    if requested not in PARAM_DTYPES:
      raise ValueError(f'--dtype must be keep or one of {PARAM_DTYPES}, got {requested!r}')
    return requested
  counts: dict[str, int] = {}
  for n in names.values():
    counts[n] = counts.get(n, 0) + 1
  if len(counts) > 1:
    raise ValueError(f'{where}: parameters are stored in mixed dtypes {counts}; pass --dtype float32 or '
                     '--dtype bfloat16 to choose one')
  (only,) = counts or {'float32': 0}
  if only not in PARAM_DTYPES:
    raise ValueError(f'{where}: parameters are stored as {only}, which the model does not hold; pass --dtype '
                     'float32 (exact upcast) or --dtype bfloat16')
  return only


def convert(kind_name: str, source: str | os.PathLike, dest: str | os.PathLike, cfg, *, dtype: str = 'keep',
            use_ema: bool = False, assets: Mapping[str, str | os.PathLike] | None = None,
            layout: str | None = None, overwrite: bool = False) -> dict:
  """Converts an official checkpoint file into a params checkpoint directory; returns the written config dict."""
  kind = KINDS[kind_name]
  source = pathlib.Path(source)
  dest = pathlib.Path(dest)
  if dest.exists() and not overwrite:  # fail before the (long) read
    raise FileExistsError(f'{dest} already exists (pass --overwrite to replace it)')
  with kind.open_source(source) as state_dict:
    view, prefix = (rules_lib.select_prefix(state_dict, use_ema=use_ema) if kind.prefixes else (state_dict, ''))
    if use_ema and not kind.prefixes:
      raise ValueError(f'--ema applies to DiT checkpoints only (the {kind_name} file has no net_ema. copy)')
    expected = rules_lib.official_shapes(kind.rules(cfg), kind.abstract_params(cfg))
    stored = {k: state_dict.info(prefix + k).dtype for k in expected if k in view}
    param_dtype = resolve_param_dtype(dtype, stored, where=str(source))
    cfg = kind.with_param_dtype(cfg, param_dtype)
    params = rules_lib.load_state_dict(kind.rules(cfg), view, kind.abstract_params(cfg), ignore=kind.ignore,
                                       where=str(source))
    ignored = sorted(k for k in view if k not in expected)
    outside_prefix = len(state_dict) - len(view)
  config = checkpoint.describe(
      kind_name, kind.config_to_dict(cfg), layout=layout, assets={name: name for name in (assets or {})},
      source={
          'file': source.name,
          'prefix': prefix,
          'stored_dtypes': sorted({_dtype_name(d) for d in stored.values()}),
          'param_dtype': param_dtype,
          'num_tensors': len(expected),
          'dropped_keys': ignored,
          'keys_outside_prefix': outside_prefix,
          'converted_at': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
      })
  checkpoint.save_params(dest, params, config, assets, overwrite=overwrite)
  return config


def convert_t5(hf_dir: str | os.PathLike, dest: str | os.PathLike, *, dtype: str = 'keep',
               spiece: str | os.PathLike | None = None, overwrite: bool = False) -> dict:
  """A Hugging Face T5 folder -> a params checkpoint with the tokenizer (`spiece.model`, and
  `tokenizer_config.json` when present) as assets. The t5-11b architecture is checked against the manifest."""
  cfg = t5_rules.read_hf_config(hf_dir)
  t5_rules.check_against_manifest(cfg)
  spiece = pathlib.Path(spiece) if spiece else pathlib.Path(hf_dir) / t5_rules.SPIECE_FILE
  if not spiece.is_file():
    raise FileNotFoundError(f'SentencePiece model {spiece} not found (the encoder is useless without its tokenizer; '
                            'pass --spiece PATH)')
  assets = {t5_rules.SPIECE_FILE: spiece}
  tokenizer_config = pathlib.Path(hf_dir) / t5_rules.TOKENIZER_CONFIG_FILE
  if tokenizer_config.is_file():
    t5_rules.read_extra_ids(hf_dir)  # refuse a broken file now, not at encoding time
    assets[t5_rules.TOKENIZER_CONFIG_FILE] = tokenizer_config
  return convert('t5', hf_dir, dest, cfg, dtype=dtype, assets=assets, overwrite=overwrite)


def policy_assets(statistics: str | None, text_store: str | None) -> dict[str, str]:
  """Validated policy side files (read safely: JSON, and the safetensors text store; never a pickle)."""
  assets = {}
  if statistics:
    if os.path.isdir(statistics):
      raise ValueError(f'--statistics must be a JSON file, got the directory {statistics}')
    stats_lib.load_statistics(statistics)
    assets[STATISTICS_ASSET] = statistics
  if text_store:
    if not os.path.isdir(text_store):
      hint = (' (an official pickle: import it once with `python -m cosmos_jax.data.text import --pickle=FILE '
              '--out=DIR` and pass DIR)' if str(text_store).endswith('.pkl') else '')
      raise ValueError(f'--text_store must be a text store directory, got {text_store}{hint}')
    text_lib.TextStore.load(text_store)
    assets[TEXT_STORE_ASSET] = text_store
  return assets


def load_converted(path: str | os.PathLike, *, step: int | None = None, use_ema: bool | None = None,
                   merge_lora: bool = True, lora_base: str | os.PathLike | None = None) -> tuple[dict, Any, dict]:
  """(params as numpy, model config (DiTConfig / VAEConfig / T5Config), assets/config.json) of a checkpoint: a
  converted one, or a training run's (its directory or workdir; the latest step or `step`; EMA parameters when
  the run kept them, or as `use_ema` says). A LoRA run's adapters come merged into their base (`merge_lora`), or
  beside its kernels (the DiT runs them unmerged); `lora_base` is the base at another path.

  The params' shapes (the base's, for unmerged adapters) are checked against the model's.
  """
  params, config = checkpoint.load_params(path, step=step, use_ema=use_ema, merge_lora=merge_lora,
                                          lora_base=lora_base)
  if config.get('format') != FORMAT or config.get('model') not in KINDS:
    raise ValueError(f'{path}: config.json is not a converted-model config (format {config.get("format")!r}, '
                     f'model {config.get("model")!r}; expected {FORMAT!r} and one of {sorted(KINDS)})')
  kind = KINDS[config['model']]
  cfg = kind.config_from_dict(config['config'])
  base = params
  if config.get('lora') and not merge_lora:
    base = jax.tree_util.tree_map_with_path(lambda p, x: None if p[-1].key in lora_lib.ADAPTER_LEAVES else x, params)
  _check_params_match(base, kind.abstract_params(cfg), str(path))
  return params, cfg, config


# --------------------------------------------------------------------------------------------------------------
# Export.


def _check_params_match(params, abstract, where: str) -> None:
  flat = {'/'.join(str(getattr(p, 'key', p)) for p in path): np.shape(v)
          for path, v in jax.tree_util.tree_leaves_with_path(params)}
  want = {'/'.join(str(getattr(p, 'key', p)) for p in path): tuple(v.shape)
          for path, v in jax.tree_util.tree_leaves_with_path(abstract)}
  missing = sorted(set(want) - set(flat))
  unexpected = sorted(set(flat) - set(want))
  misshaped = sorted(f'{k}: got {flat[k]}, expected {want[k]}' for k in set(want) & set(flat) if flat[k] != want[k])
  if missing or unexpected or misshaped:
    raise rules_lib.WeightLoadingError(missing, unexpected, misshaped, where)


def export(checkpoint_dir: str | os.PathLike, out_path: str | os.PathLike, *, dtype: str = 'keep',
           prefix: str | None = None, step: int | None = None, use_ema: bool | None = None, merge: bool = False,
           lora_base: str | os.PathLike | None = None) -> dict[str, tuple[int, ...]]:
  """A checkpoint (converted, or a training run's; see `load_converted`) -> an official-layout state_dict file
  (.safetensors or .pt: `net.` keys for a DiT, the released names and shapes). A LoRA checkpoint needs `merge`:
  the official layout has no adapters, so they are folded into the base (W + A·B·alpha/r). Returns name -> shape."""
  if dtype != 'keep' and dtype not in EXPORT_DTYPES:
    raise ValueError(f'--dtype must be keep or one of {EXPORT_DTYPES}, got {dtype!r}')
  try:
    is_lora = checkpoint.open_checkpoint(checkpoint_dir, step).is_lora
  except checkpoint.CheckpointError:
    is_lora = False  # not a checkpoint of ours: load_converted says what it is instead
  if is_lora != merge:
    raise ValueError(f'{checkpoint_dir} is a LoRA checkpoint: pass --merge to fold its adapters into the base (the '
                     'official layout has no adapters)' if is_lora else
                     f'--merge folds LoRA adapters into their base; {checkpoint_dir} holds no adapters')
  params, cfg, config = load_converted(checkpoint_dir, step=step, use_ema=use_ema, lora_base=lora_base)
  kind = KINDS[config['model']]
  state_dict = rules_lib.export_state_dict(kind.rules(cfg), params,
                                           prefix=kind.export_prefix if prefix is None else prefix,
                                           dtype=None if dtype == 'keep' else _NUMPY_DTYPES[dtype])
  torch_io.save_state_dict(state_dict, out_path)
  used_prefix = kind.export_prefix if prefix is None else prefix
  shapes = rules_lib.official_shapes(kind.rules(cfg), jax.eval_shape(lambda p: p, params))
  return {used_prefix + name: shape for name, shape in shapes.items()}
