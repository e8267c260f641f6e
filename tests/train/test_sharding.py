"""The FSDP rules on the real 2B train state, on 8 fake CPU devices, without allocating it (`jax.eval_shape`):
every large parameter and its Adam moments sharded 8 ways on a dimension that divides, never the scanned layer
axis, per-device bytes ~1/8 of the total; the mesh and the batch sharding. Runs in a subprocess because the device
count is fixed when JAX starts."""

import json
import math
import os
import pathlib
import subprocess
import sys

import jax
import pytest
from jax.sharding import PartitionSpec as P

from cosmos_jax.train import sharding

REPO = pathlib.Path(__file__).resolve().parents[2]

SCRIPT = r'''
import json, math
import jax, numpy as np
from jax.sharding import PartitionSpec as P
from configs import aloha
from cosmos_jax.nn import dit
from cosmos_jax.train import optim, sharding, state as state_lib, trainer

assert jax.device_count() == 8, jax.devices()
config = aloha.get_config()
cfg = trainer.step_config(config)
tx = optim.make_optimizer(config.optim)
abstract = jax.eval_shape(lambda p: state_lib.init_state(p, tx, 0), dit.abstract_params(cfg.dit))
out = {}
for data, fsdp in ((1, 8), (2, 4)):
  mesh = sharding.make_mesh(data, fsdp)
  shardings = sharding.tree_shardings(abstract, mesh)
  leaves = []
  for (path, leaf), s in zip(jax.tree_util.tree_leaves_with_path(abstract), jax.tree.leaves(shardings)):
    name = jax.tree_util.keystr(path)
    local = s.shard_shape(leaf.shape)  # raises if a sharded dimension does not divide
    leaves.append(dict(name=name, shape=list(leaf.shape), spec=[a if a is None else str(a) for a in s.spec],
                       bytes=math.prod(leaf.shape) * leaf.dtype.itemsize,
                       local_bytes=math.prod(local) * leaf.dtype.itemsize))
  out[f'{data}x{fsdp}'] = leaves
lora_config = aloha.get_config('lora')
abstract_lora = trainer.abstract_train_state(lora_config, trainer.step_config(lora_config),
                                             trainer.make_optimizer(lora_config))
lora_shardings = sharding.tree_shardings(abstract_lora, sharding.make_mesh(1, 8))
out['lora_1x8'] = [dict(name=jax.tree_util.keystr(path), shape=list(leaf.shape), dtype=leaf.dtype.name,
                        spec=[a if a is None else str(a) for a in s.spec], bytes=math.prod(leaf.shape) * leaf.dtype.itemsize,
                        local_bytes=math.prod(s.shard_shape(leaf.shape)) * leaf.dtype.itemsize)
                   for (path, leaf), s in zip(jax.tree_util.tree_leaves_with_path(abstract_lora),
                                              jax.tree.leaves(lora_shardings))]
batch = sharding.batch_sharding(sharding.make_mesh(2, 4), 5)
out['batch_shard'] = list(batch.shard_shape((16, 11, 224, 224, 3)))
print('RESULT ' + json.dumps(out))
'''


@pytest.fixture(scope='module')
def shardings():
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=8', 'JAX_PLATFORMS': 'cpu',
         'PYTHONPATH': str(REPO)}
  proc = subprocess.run([sys.executable, '-c', SCRIPT], cwd=REPO, env=env, capture_output=True, text=True,
                        check=False, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith('RESULT ')][-1]
  return json.loads(line[len('RESULT '):])


@pytest.mark.parametrize('mesh,fsdp', [('1x8', 8), ('2x4', 4)])
def test_2b_train_state_is_sharded_fsdp_ways(shardings, mesh, fsdp):
  leaves = shardings[mesh]
  total = sum(l['bytes'] for l in leaves)
  local = sum(l['local_bytes'] for l in leaves)
  assert total > 20e9  # fp32 masters + two Adam moments of ~2B parameters
  # Only arrays under MIN_FSDP_SIZE elements (norm scales, counts, the RNG key) stay replicated.
  assert local / total < 1 / fsdp * 1.001, f'per-device {local / 2**30:.2f} GiB of {total / 2**30:.2f} GiB'
  for leaf in leaves:
    sharded = [i for i, axis in enumerate(leaf['spec']) if axis == 'fsdp']
    if math.prod(leaf['shape']) >= sharding.MIN_FSDP_SIZE and any(d % fsdp == 0 for d in leaf['shape'][1:]):
      assert len(sharded) == 1, leaf
    if "['blocks']" in leaf['name']:
      assert 0 not in sharded, f'the scanned layer axis is sharded: {leaf}'
    for i in sharded:
      assert leaf['shape'][i] % fsdp == 0, leaf


def test_moments_follow_their_parameters(shardings):
  by_name = {l['name']: l['spec'] for l in shardings['1x8']}
  params = {n[len('.params'):]: s for n, s in by_name.items() if n.startswith('.params')}
  moments = [(n, s) for n, s in by_name.items() if n.startswith('.opt_state') and ('.mu' in n or '.nu' in n)]
  assert moments
  for name, spec in moments:
    suffix = name[name.index("['"):]
    assert params[suffix] == spec, name


def test_lora_state_shards_by_the_same_rules(shardings):
  """A LoRA state ({'base', 'adapters'}, optimiser partitioned): the bf16 base sharded exactly as the full
  fine-tune's params, the adapters and their moments by the same path rules (8 ways, never the layer axis)."""
  full = {l['name'][len('.params'):]: l['spec'] for l in shardings['1x8'] if l['name'].startswith('.params')}
  leaves = shardings['lora_1x8']
  base = [l for l in leaves if l['name'].startswith(".params['base']")]
  assert len(base) == len(full) and all(l['dtype'] == 'bfloat16' for l in base)
  for leaf in base:
    assert leaf['spec'] == full[leaf['name'][len(".params['base']"):]], leaf
  adapters = {l['name'][len(".params['adapters']"):]: l for l in leaves if l['name'].startswith(".params['adapters']")}
  assert len(adapters) == 2 * 10 and sum(math.prod(l['shape']) for l in adapters.values()) == 34_406_400
  for leaf in adapters.values():
    assert leaf['spec'].count('fsdp') == 1 and leaf['spec'][0] is None, leaf
  moments = [l for l in leaves if l['name'].startswith('.opt_state')]
  assert len([m for m in moments if m['shape']]) == 2 * len(adapters)  # nothing of the base
  for moment in (m for m in moments if m['shape']):
    assert moment['spec'] == adapters[moment['name'][moment['name'].index("['blocks']"):]]['spec'], moment
  trained = [l for l in leaves if not l['name'].startswith(".params['base']")]
  local, total = sum(l['local_bytes'] for l in trained), sum(l['bytes'] for l in trained)
  assert local / total < 1 / 8 * 1.001, f'adapters, moments: per-device {local} of {total} bytes'


def test_batch_is_split_over_both_axes(shardings):
  assert shardings['batch_shard'] == [2, 11, 224, 224, 3]


def test_fsdp_spec_rules():
  assert sharding.fsdp_spec((28, 2048, 6144), 8, skip_leading=True) == P(None, None, 'fsdp')
  assert sharding.fsdp_spec((8, 4096), 8, skip_leading=True) == P(None, 'fsdp')  # never the layer axis
  assert sharding.fsdp_spec((2048,), 8) == P()  # small: replicated
  assert sharding.fsdp_spec((4099, 3), 8) == P()  # nothing divides
  assert sharding.fsdp_spec((4096, 4096), 1) == P()
  with pytest.raises(ValueError, match='fsdp=3 must be >= 1 and divide the 1 devices'):
    sharding.make_mesh(-1, 3, jax.devices()[:1])


def test_param_specs_rule_errors():
  tree = {'blocks': {'w': jax.ShapeDtypeStruct((8, 64, 128), 'float32')},
          'head': {'w': jax.ShapeDtypeStruct((64, 128), 'float32')}}
  mesh = sharding.make_mesh(1, 1, jax.devices()[:1])
  assert sharding.param_specs(tree, mesh) == {'blocks': {'w': P()}, 'head': {'w': P()}}  # one device: replicated
  with pytest.raises(ValueError, match="no sharding rule matches parameter 'head/w'"):
    sharding.param_specs(tree, mesh, ((r'blocks/.*', 'fsdp'),))
  with pytest.raises(ValueError, match="sharding rule 'split'"):
    sharding.param_specs(tree, mesh, ((r'.*', 'split'),))
