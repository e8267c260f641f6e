"""T5 instruction encoding throughput: prompts per second through the path of `python -m cosmos_jax.data.text encode`
(tokenize, pad to 512, encode, zero the padding, float32 result to host), medians over repeats after a warm-up.

Rows:
  tiny-cpu        the tiny original-T5 encoder (nn.t5 PRESETS['tiny'], random weights) on the host CPU, float32,
                  with a SentencePiece model trained on the fly (or --spiece).
  tiny-cpu-torch  baseline, same run: transformers' T5EncoderModel with the same weights and token ids, torch CPU
                  float32, the official recipe (last_hidden_state, padded rows zeroed). Needs torch + transformers.
  11b-bf16-gpu    the t5-11b encoder (4.86 B parameters) in bf16 on one GPU: --t5 a converted checkpoint, else random
                  weights of the real shapes (speed does not depend on the values). Skipped without a GPU.
  11b-fp32-gpu    the same in float32, as the official encoder runs. Skipped without a GPU.

Prompt lengths only change the tokenizer's share: every prompt is padded to 512 tokens, as the official code does.

Usage: python benchmarks/t5.py [--rows tiny-cpu,tiny-cpu-torch,11b-bf16-gpu,11b-fp32-gpu] [--batch-size 8]
                               [--repeats 5] [--out benchmarks/results/t5.json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pathlib
import platform
import random
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from cosmos_jax.data import text as text_lib  # pylint: disable=g-import-not-at-top
from cosmos_jax.data import tokenizer as tokenizer_lib  # pylint: disable=g-import-not-at-top
from cosmos_jax.nn import t5 as t5_lib  # pylint: disable=g-import-not-at-top

ROWS = ('tiny-cpu', 'tiny-cpu-torch', '11b-bf16-gpu', '11b-fp32-gpu')
GPU_ROWS = ('11b-bf16-gpu', '11b-fp32-gpu')
PROMPTS = ('pick up the red cube and place it in the bowl', 'put candy in bag', 'fold the shirt, then 2 more!',
           'open the drawer; close the microwave (slowly)', 'move the left arm 12.5 cm to the right')


def trained_spiece(vocab_size: int = 300) -> bytes:
  """A small unigram SentencePiece model with T5's special ids (the real spiece.model cannot be downloaded here)."""
  import sentencepiece  # pylint: disable=g-import-not-at-top  (the text extra)

  rng = random.Random(0)
  words = ' '.join(PROMPTS).replace(',', ' ').replace(';', ' ').split()
  syllables = ('ka', 'to', 'ri', 'mu', 'sen', 'pla', 'dro', 've', 'qui', 'zon')
  words += [''.join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(300)]
  sentences = [' '.join(rng.choice(words) for _ in range(rng.randint(3, 12))) + '.' for _ in range(2000)]
  model = io.BytesIO()
  sentencepiece.SentencePieceTrainer.train(
      sentence_iterator=iter(sentences), model_writer=model, vocab_size=vocab_size, model_type='unigram', pad_id=0,
      eos_id=1, unk_id=2, bos_id=-1, hard_vocab_limit=False, minloglevel=2)
  return model.getvalue()


def prompts(n: int) -> list[str]:
  return [f'{PROMPTS[i % len(PROMPTS)]} #{i}' for i in range(n)]


def time_batches(run, batch_prompts, repeats: int) -> list[float]:
  run(batch_prompts)  # compile / warm up
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    run(batch_prompts)
    times.append(time.perf_counter() - start)
  return times


def row_result(row, times, batch, cfg, device, note) -> dict:
  median = float(np.median(times))
  return {'row': row, 'device': device, 'batch_size': batch, 'tokens': text_lib.NUM_TOKENS,
          'params': t5_lib.num_params(cfg), 'dtype': cfg.dtype, 'median_batch_s': median,
          'prompts_per_s': batch / median, 'tflops_per_s': t5_lib.forward_flops(cfg, batch, text_lib.NUM_TOKENS) / median / 1e12,
          'times_s': times, 'note': note}


def tiny_encoder(args) -> text_lib.T5TextEncoder:
  spiece = pathlib.Path(args.spiece).read_bytes() if args.spiece else trained_spiece()
  tokenizer = tokenizer_lib.T5Tokenizer(spiece)
  cfg = t5_lib.PRESETS['tiny']
  with jax.default_device(jax.devices('cpu')[0]):
    params = jax.device_get(t5_lib.init_params(cfg, jax.random.key(0)))
    return text_lib.T5TextEncoder(params, cfg, tokenizer, name='tiny (random)', batch_size=args.batch_size)


def torch_baseline(encoder: text_lib.T5TextEncoder, batch_prompts, repeats: int) -> list[float]:
  """transformers' T5EncoderModel with our tiny encoder's weights (exported through the rule table)."""
  import torch  # pylint: disable=g-import-not-at-top  (baseline row only)
  import transformers  # pylint: disable=g-import-not-at-top
  from cosmos_jax.convert import rules as rules_lib  # pylint: disable=g-import-not-at-top
  from cosmos_jax.convert import t5_rules  # pylint: disable=g-import-not-at-top

  cfg = encoder.cfg
  hf_cfg = transformers.T5Config(**{k: v for k, v in cfg.to_dict().items() if k not in ('dtype', 'param_dtype')})
  model = transformers.T5EncoderModel(hf_cfg).eval()
  state_dict = rules_lib.export_state_dict(t5_rules.t5_rules(cfg), jax.device_get(encoder.params))
  tensors = {k: torch.from_numpy(np.array(v)) for k, v in state_dict.items()}
  tensors[t5_rules.TIED_EMBEDDING_KEY] = tensors[t5_rules.EMBEDDING_KEY]
  model.load_state_dict(tensors, strict=True)
  torch.set_num_threads(os.cpu_count() or 1)

  def run(texts):
    ids, mask = encoder.tokenizer.batch(texts, text_lib.NUM_TOKENS)
    with torch.inference_mode():
      hidden = model(input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask)).last_hidden_state
    return (hidden * torch.from_numpy(mask)[..., None]).numpy()

  ours, theirs = encoder.embeddings(batch_prompts), run(batch_prompts)
  error = np.linalg.norm(ours - theirs) / np.linalg.norm(theirs)
  if error > 1e-4:
    raise AssertionError(f'baseline and JAX disagree: relative L2 {error:.2e}')
  return time_batches(run, batch_prompts, repeats)


def gpu_encoder(row: str, args) -> text_lib.T5TextEncoder:
  dtype = 'bfloat16' if row == '11b-bf16-gpu' else 'float32'
  if args.t5:
    return text_lib.T5TextEncoder.load(args.t5, dtype=dtype, batch_size=args.batch_size)
  cfg = t5_lib.T5Config(dtype=dtype, param_dtype=dtype)
  params = jax.jit(lambda k: t5_lib.init_params(cfg, k))(jax.random.key(0))
  tokenizer = tokenizer_lib.T5Tokenizer(trained_spiece())
  return text_lib.T5TextEncoder(params, cfg, tokenizer, name='t5-11b (random weights)', batch_size=args.batch_size)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--rows', default=','.join(ROWS))
  parser.add_argument('--batch-size', type=int, default=8)
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--spiece', help='a SentencePiece model for the tiny rows (else one is trained here)')
  parser.add_argument('--t5', help='a converted t5-11b checkpoint for the GPU rows (else random weights)')
  parser.add_argument('--out', default='benchmarks/results/t5.json')
  args = parser.parse_args(argv)
  rows = [r.strip() for r in args.rows.split(',') if r.strip()]
  unknown = sorted(set(rows) - set(ROWS))
  if unknown:
    parser.error(f'unknown rows {unknown}; known: {ROWS}')
  has_gpu = any(d.platform == 'gpu' for d in jax.devices())
  batch_prompts = prompts(args.batch_size)
  results, skipped = [], []
  tiny = tiny_encoder(args) if {'tiny-cpu', 'tiny-cpu-torch'} & set(rows) else None
  for row in rows:
    if row == 'tiny-cpu':
      with jax.default_device(jax.devices('cpu')[0]):
        times = time_batches(tiny.embeddings, batch_prompts, args.repeats)
      results.append(row_result(row, times, args.batch_size, tiny.cfg, 'cpu', 'JAX, float32'))
    elif row == 'tiny-cpu-torch':
      try:
        times = torch_baseline(tiny, batch_prompts, args.repeats)
      except ImportError as e:
        skipped.append({'row': row, 'reason': f'needs torch + transformers ({e})'})
        continue
      results.append(row_result(row, times, args.batch_size, tiny.cfg, 'cpu', 'transformers T5EncoderModel, torch'))
    elif not has_gpu:
      skipped.append({'row': row, 'reason': 'no GPU visible to JAX'})
    else:
      encoder = gpu_encoder(row, args)
      times = time_batches(encoder.embeddings, batch_prompts, args.repeats)
      results.append(row_result(row, times, args.batch_size, encoder.cfg, str(jax.devices()[0].device_kind),
                                encoder.name))
      del encoder

  baseline = next((r for r in results if r['row'] == 'tiny-cpu-torch'), None)
  print(f'{"row":16s} {"device":14s} {"dtype":9s} {"batch":>5s} {"median s":>9s} {"prompts/s":>10s} {"TFLOP/s":>8s} '
        f'{"vs torch":>8s}')
  for r in results:
    ratio = f'{r["prompts_per_s"] / baseline["prompts_per_s"]:.2f}x' if baseline and r['row'].startswith('tiny') else ''
    print(f'{r["row"]:16s} {r["device"][:14]:14s} {r["dtype"]:9s} {r["batch_size"]:5d} {r["median_batch_s"]:9.4f} '
          f'{r["prompts_per_s"]:10.2f} {r["tflops_per_s"]:8.3f} {ratio:>8s}')
  for s in skipped:
    print(f'{s["row"]:16s} skipped: {s["reason"]}')
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps({'benchmark': 't5', 'host': platform.node(), 'jax': jax.__version__,
                             'devices': [str(d) for d in jax.devices()], 'results': results, 'skipped': skipped},
                            indent=2) + '\n', encoding='utf-8')
  print(f'wrote {out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
