"""Generates tests/golden/preprocess_aloha/ by running the OFFICIAL preprocess_split_aloha_data.py (NVlabs/cosmos-policy
at 18a2acc, read from a git mirror, executed unmodified) on the synthetic raw episodes of tests/data/aloha_raw.py.
Only its output is committed; the tests never import this file.

    python tests/golden_generators/preprocess_aloha.py --mirror /path/to/cosmos-policy.git

The official script shuffles with the unseeded global `random`; this runner calls random.seed(SEED) first, which
makes the split the one `cosmos_jax.data.preprocess_aloha --seed SEED` computes. It needs cv2, h5py, numpy, PIL, tqdm.
"""

import argparse
import os
import random
import runpy
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)
from tests.data import aloha_raw  # pylint: disable=wrong-import-position

COMMIT = '18a2acc'
SCRIPT = 'cosmos_policy/experiments/robot/aloha/preprocess_split_aloha_data.py'
SEED, PERCENT_VAL, IMAGE_SIZE, FPS = 0, 0.4, 32, 25
DATASET = 'synthetic_task'
OUT = os.path.join(REPO, 'tests', 'golden', 'preprocess_aloha')


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--mirror', required=True, help='git directory of NVlabs/cosmos-policy')
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    script = os.path.join(tmp, 'official_preprocess.py')
    with open(script, 'wb') as f:
      f.write(subprocess.run(['git', f'--git-dir={args.mirror}', 'show', f'{COMMIT}:{SCRIPT}'], check=True,
                             capture_output=True).stdout)
    raw = aloha_raw.write_raw_dataset(os.path.join(tmp, DATASET))
    out = os.path.join(tmp, 'out')
    sys.argv = [script, '--dataset_path', raw, '--out_base_dir', out, '--percent_val', str(PERCENT_VAL),
                '--img_resize_size', str(IMAGE_SIZE), '--video_fps', str(FPS)]
    random.seed(SEED)
    runpy.run_path(script, run_name='__main__')
    shutil.rmtree(OUT, ignore_errors=True)
    shutil.copytree(os.path.join(out, DATASET), os.path.join(OUT, DATASET))
  print(f'wrote {OUT}')


if __name__ == '__main__':
  main()
