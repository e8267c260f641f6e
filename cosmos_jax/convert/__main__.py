"""`python -m cosmos_jax.convert`: released PyTorch checkpoints <-> our orbax params checkpoints.

The command line over cosmos_jax/convert/library.py (which documents streaming, dtypes and the output layout).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from cosmos_jax.convert import library
from cosmos_jax.nn import dit
from cosmos_jax.policy import layout as layout_lib

_EXAMPLES = """examples:
  # DiT (policy or base model): net. keys (net_ema. with --ema, or when it is the only copy).
  python -m cosmos_jax.convert dit Cosmos-Policy-ALOHA-Predict2-2B.pt out/aloha --layout aloha \\
      --statistics aloha_dataset_statistics.json --text-store aloha_text/
  # The Wan2.1 VAE tokenizer.
  python -m cosmos_jax.convert vae tokenizer.pth out/vae
  # The T5 text encoder from a Hugging Face model folder (config.json, weights, spiece.model).
  python -m cosmos_jax.convert t5 --hf-dir t5-11b/ --out out/t5
  # Back to the official layout (.safetensors, or .pt for the official loader), with the net. prefix for a DiT.
  python -m cosmos_jax.convert export --checkpoint out/aloha --out aloha.pt
  # A fine-tuned model, from its training workdir (latest step; EMA parameters when the run kept them).
  python -m cosmos_jax.convert export --checkpoint runs/aloha --out policy.pt
"""


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='python -m cosmos_jax.convert', description=__doc__.split('\n\n')[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_EXAMPLES)
  sub = parser.add_subparsers(dest='command', required=True)

  def common(p):
    p.add_argument('source', help='official checkpoint: .pt/.pth (torch.load weights_only) or .safetensors')
    p.add_argument('dest', help='output directory (must not exist unless --overwrite)')
    p.add_argument('--dtype', default='keep', choices=('keep',) + library.PARAM_DTYPES,
                   help='parameter dtype: keep the stored one (default), or cast')
    p.add_argument('--config', help='JSON of the official constructor arguments (or a golden config.json)')
    p.add_argument('--overwrite', action='store_true')

  p = sub.add_parser('dit', help='Cosmos-Predict2 / Cosmos-Policy DiT checkpoint')
  common(p)
  p.add_argument('--preset', default=None,
                 help=f'DiT preset instead of --config: one of {sorted(dit.PRESETS)} (default 2B)')
  p.add_argument('--ema', action='store_true', help='use the net_ema. copy')
  p.add_argument('--statistics', help='dataset_statistics.json to copy in (policy checkpoints)')
  p.add_argument('--text-store', help='text store directory (cosmos_jax.data.text) to copy in')
  p.add_argument('--layout', choices=sorted(layout_lib.LAYOUTS),
                 help='the policy layout (a policy checkpoint: with --statistics and --text-store)')

  p = sub.add_parser('vae', help='Wan2.1 VAE (tokenizer.pth)')
  common(p)

  p = sub.add_parser('t5', help='T5 text encoder from a Hugging Face model folder (T5EncoderModel weights)')
  p.add_argument('--hf-dir', required=True,
                 help='model folder: config.json, model.safetensors or pytorch_model.bin (or sharded), spiece.model')
  p.add_argument('--out', required=True, help='output directory (must not exist unless --overwrite)')
  p.add_argument('--dtype', default='keep', choices=('keep',) + library.PARAM_DTYPES,
                 help='parameter dtype: keep the stored one (default), or cast')
  p.add_argument('--spiece', default=None, help='the SentencePiece model, if not spiece.model in --hf-dir')
  p.add_argument('--overwrite', action='store_true')

  p = sub.add_parser('export', help='checkpoint (converted, or a training run) -> official state_dict file')
  p.add_argument('--checkpoint', required=True,
                 help='a checkpoint directory (written by `dit`, `vae`, `t5` or the trainer) or a training workdir')
  p.add_argument('--out', required=True, help='output file: .safetensors, or .pt/.pth for the official loader')
  p.add_argument('--step', type=int, default=None, help='training step to export (default: the latest)')
  ema = p.add_mutually_exclusive_group()
  ema.add_argument('--use-ema', dest='use_ema', action='store_true', default=None,
                   help='the EMA parameters (default: them when the run kept an EMA)')
  ema.add_argument('--no-ema', dest='use_ema', action='store_false', help='the trained (non-EMA) parameters')
  p.add_argument('--dtype', default='keep', choices=('keep',) + library.EXPORT_DTYPES)
  p.add_argument('--prefix', default=None, help="key prefix (default: 'net.' for a DiT, none for the VAE)")
  return parser


def run(argv: Sequence[str] | None = None) -> dict:
  """Parses `argv` and runs the command; raises on bad input (see `main` for the exit-code wrapper)."""
  args = build_parser().parse_args(argv)
  if args.command == 'export':
    shapes = library.export(args.checkpoint, args.out, dtype=args.dtype, prefix=args.prefix, step=args.step,
                            use_ema=args.use_ema)
    print(f'wrote {len(shapes)} tensors to {args.out}')
    return {'tensors': len(shapes)}
  start = time.perf_counter()
  if args.command == 'dit':
    cfg = library.dit_config(args.preset, args.config)
    assets = library.policy_assets(args.statistics, args.text_store)
    if assets and not args.layout:
      raise ValueError('a policy checkpoint (--statistics / --text-store) needs --layout (one of '
                       f'{sorted(layout_lib.LAYOUTS)})')
    result = library.convert('dit', args.source, args.dest, cfg, dtype=args.dtype, use_ema=args.ema, assets=assets,
                             layout=args.layout, overwrite=args.overwrite)
  elif args.command == 't5':
    args.source, args.dest = args.hf_dir, args.out
    result = library.convert_t5(args.hf_dir, args.out, dtype=args.dtype, spiece=args.spiece,
                                overwrite=args.overwrite)
  else:
    result = library.convert('vae', args.source, args.dest, library.vae_config(args.config), dtype=args.dtype,
                             overwrite=args.overwrite)
  src = result['source']
  print(f'converted {src["num_tensors"]} tensors ({"/".join(src["stored_dtypes"])} -> {src["param_dtype"]}, '
        f'prefix {src["prefix"]!r}, dropped {len(src["dropped_keys"])}) from {args.source} to {args.dest} '
        f'in {time.perf_counter() - start:.1f} s')
  return result


def main(argv: Sequence[str] | None = None) -> int:
  try:
    run(argv)
  except (ValueError, FileNotFoundError, FileExistsError, ImportError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
