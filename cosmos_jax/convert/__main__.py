"""`python -m cosmos_jax.convert dit|vae|t5|export`: released PyTorch checkpoints <-> our orbax params checkpoints.

The command line over cosmos_jax/convert/library.py (which documents streaming, dtypes and the output layout), with
absl flags spelled as every other command's (`--text_store`, `--[no]use_ema`; `--flag=value` or `--flag value`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

from absl import flags

from cosmos_jax import command_line
from cosmos_jax.convert import checkpoint_flags
from cosmos_jax.convert import library
from cosmos_jax.nn import dit
from cosmos_jax.policy import layout as layout_lib

PROG = 'python -m cosmos_jax.convert'
_USAGE = f"""usage: {PROG} dit SOURCE DEST [--preset=P | --config=JSON] [--ema]
           [--layout=L --statistics=FILE --text_store=DIR]
       {PROG} vae SOURCE DEST [--config=JSON]
       {PROG} t5 --hf_dir=DIR --out=DIR [--spiece=FILE]
       {PROG} export --checkpoint=DIR --out=FILE [--step=N] [--[no]use_ema] [--prefix=P] [--merge [--lora_base=DIR]]
  (dit, vae, t5 also take --dtype and --overwrite; export takes --dtype)"""
_EXAMPLES = """examples:
  # DiT (policy or base model): net. keys (net_ema. with --ema, or when it is the only copy).
  python -m cosmos_jax.convert dit Cosmos-Policy-ALOHA-Predict2-2B.pt out/aloha --layout=aloha \\
      --statistics=aloha_dataset_statistics.json --text_store=aloha_text/
  # The Wan2.1 VAE tokenizer.
  python -m cosmos_jax.convert vae tokenizer.pth out/vae
  # The T5 text encoder from a Hugging Face model folder (config.json, weights, spiece.model).
  python -m cosmos_jax.convert t5 --hf_dir=t5-11b/ --out=out/t5
  # Back to the official layout (.safetensors, or .pt for the official loader), with the net. prefix for a DiT.
  python -m cosmos_jax.convert export --checkpoint=out/aloha --out=aloha.pt
  # A fine-tuned model, from its training workdir (latest step; EMA parameters when the run kept them).
  python -m cosmos_jax.convert export --checkpoint=runs/aloha --out=policy.pt
  # A LoRA fine-tune: the adapters folded into the base they were trained on.
  python -m cosmos_jax.convert export --checkpoint=runs/aloha_lora --merge --out=policy.pt
"""


def define_flags(flag_values: flags.FlagValues) -> None:
  """Every command's flags (COMMANDS says which command takes which)."""
  fv = {'flag_values': flag_values}
  flags.DEFINE_string('dtype', 'keep', 'Parameter dtype: keep the stored one (default), or cast to one of '
                      f'{library.PARAM_DTYPES} (export: {library.EXPORT_DTYPES}).', **fv)
  flags.DEFINE_string('config', None, 'dit, vae: JSON of the official constructor arguments (or a golden '
                      'config.json).', **fv)
  flags.DEFINE_bool('overwrite', False, 'dit, vae, t5: replace an existing output directory.', **fv)
  flags.DEFINE_string('preset', None, f'dit: DiT preset instead of --config, one of {sorted(dit.PRESETS)} '
                      '(default 2B).', **fv)
  flags.DEFINE_bool('ema', False, 'dit: convert the net_ema. copy of the official file.', **fv)
  flags.DEFINE_string('statistics', None, 'dit: dataset_statistics.json to copy in (policy checkpoints).', **fv)
  flags.DEFINE_string('text_store', None, 'dit: text store directory (cosmos_jax.data.text) to copy in.', **fv)
  flags.DEFINE_enum('layout', None, sorted(layout_lib.LAYOUTS), 'dit: the policy layout (a policy checkpoint: with '
                    '--statistics and --text_store).', **fv)
  flags.DEFINE_string('hf_dir', None, 't5: model folder: config.json, model.safetensors or pytorch_model.bin (or '
                      'sharded), spiece.model.', **fv)
  flags.DEFINE_string('spiece', None, 't5: the SentencePiece model, if not spiece.model in --hf_dir.', **fv)
  flags.DEFINE_string('out', None, 't5: output directory (must not exist unless --overwrite); export: output file, '
                      '.safetensors, or .pt/.pth for the official loader.', **fv)
  flags.DEFINE_string('prefix', None, "export: key prefix (default: 'net.' for a DiT, none for the VAE).", **fv)
  flags.DEFINE_bool('merge', False, 'export: a LoRA checkpoint: fold the adapters into their base (W + A·B·alpha/r); '
                    'required for one (the official layout has no adapters).', **fv)
  flags.DEFINE_string('lora_base', None, "export: a LoRA checkpoint's base at another path than the recorded one "
                      '(its content hash must match).', **fv)
  checkpoint_flags.define(None, flag_values)  # export: --checkpoint, --step, --[no]use_ema


_CONVERT_FLAGS = ('dtype', 'config', 'overwrite')
COMMANDS = {
    'dit': command_line.Command(('SOURCE', 'DEST'),
                                _CONVERT_FLAGS + ('preset', 'ema', 'statistics', 'text_store', 'layout')),
    'vae': command_line.Command(('SOURCE', 'DEST'), _CONVERT_FLAGS),
    't5': command_line.Command((), ('hf_dir', 'out', 'dtype', 'spiece', 'overwrite'), required=('hf_dir', 'out')),
    'export': command_line.Command((), ('checkpoint', 'out', 'step', 'use_ema', 'dtype', 'prefix', 'merge',
                                        'lora_base'),
                                   required=('checkpoint', 'out')),
}
CLI = command_line.CommandLine(PROG, define_flags, COMMANDS, _USAGE, description=__doc__.split('\n\n')[0],
                               epilog=_EXAMPLES)


def parse(argv: Sequence[str]) -> command_line.Parsed:
  """`CLI.parse`, and the dtypes each command accepts."""
  parsed = CLI.parse(argv)
  dtypes = ('keep',) + (library.EXPORT_DTYPES if parsed.command == 'export' else library.PARAM_DTYPES)
  if parsed.flags.dtype not in dtypes:
    raise ValueError(f'{parsed.command}: --dtype must be one of {dtypes}, got {parsed.flags.dtype!r}')
  return parsed


def run(argv: Sequence[str]) -> dict:
  """Parses `argv` (without the program name) and runs the command; raises on bad input (see `main` for the
  exit-code wrapper)."""
  parsed = parse(argv)
  command, positional, f = parsed.command, parsed.positional, parsed.flags
  if command == 'export':
    shapes = library.export(f.checkpoint, f.out, dtype=f.dtype, prefix=f.prefix, step=f.step, use_ema=f.use_ema,
                            merge=f.merge, lora_base=f.lora_base)
    print(f'wrote {len(shapes)} tensors to {f.out}')
    return {'tensors': len(shapes)}
  start = time.perf_counter()
  if command == 'dit':
    source, dest = positional
    cfg = library.dit_config(f.preset, f.config)
    assets = library.policy_assets(f.statistics, f.text_store)
    if assets and not f.layout:
      raise ValueError('a policy checkpoint (--statistics / --text_store) needs --layout (one of '
                       f'{sorted(layout_lib.LAYOUTS)})')
    result = library.convert('dit', source, dest, cfg, dtype=f.dtype, use_ema=f.ema, assets=assets,
                             layout=f.layout, overwrite=f.overwrite)
  elif command == 't5':
    source, dest = f.hf_dir, f.out
    result = library.convert_t5(source, dest, dtype=f.dtype, spiece=f.spiece, overwrite=f.overwrite)
  else:
    source, dest = positional
    result = library.convert('vae', source, dest, library.vae_config(f.config), dtype=f.dtype,
                             overwrite=f.overwrite)
  src = result['source']
  print(f'converted {src["num_tensors"]} tensors ({"/".join(src["stored_dtypes"])} -> {src["param_dtype"]}, '
        f'prefix {src["prefix"]!r}, dropped {len(src["dropped_keys"])}) from {source} to {dest} '
        f'in {time.perf_counter() - start:.1f} s')
  return result


def main(argv: Sequence[str] | None = None) -> int:
  """The program: exit status 2 with the reason on stderr for bad input (flags, files)."""
  CLI.parse_or_exit(argv)  # --help and bad command lines exit here
  try:
    run(sys.argv[1:] if argv is None else argv)
  except (ValueError, FileNotFoundError, FileExistsError, ImportError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
