"""Dependencies: every third-party module the package imports is declared in setup.py (required, or in an extra when
it is optional), and the core (training, conversion, the policy) imports without any optional extra installed."""

from __future__ import annotations

import ast
import pathlib
import re
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]

# Import name -> distribution name, where they differ.
DISTRIBUTIONS = {'PIL': 'pillow', 'cv2': 'opencv-python-headless', 'absl': 'absl-py', 'yaml': 'pyyaml',
                 'orbax': 'orbax-checkpoint', 'tensorflow_datasets': 'tensorflow-datasets', 'gym_aloha': 'gym-aloha',
                 'av': 'av', 'cosmos_jax_client': None}  # None: shipped in this distribution
# Installed by the distributions that need them (gym-aloha brings gymnasium, dm_control and mujoco; the LIBERO
# evaluation runs in its own environment), so not declared here.
TRANSITIVE = {'gymnasium', 'dm_control', 'mujoco', 'libero', 'robosuite', 'robocasa'}
OPTIONAL = ('torch', 'tensorflow_datasets', 'sentencepiece', 'av', 'pyarrow', 'matplotlib', 'gym_aloha', 'gymnasium',
            'mujoco', 'dm_control', 'transformers', 'aiohttp', 'websockets')


def _declared() -> tuple[set[str], set[str]]:
  """(required, optional) distribution names from setup.py's install_requires and extras_require."""
  call = next(node for node in ast.walk(ast.parse((REPO / 'setup.py').read_text()))
              if isinstance(node, ast.Call) and getattr(node.func, 'attr', '') == 'setup')
  kwargs = {k.arg: k.value for k in call.keywords}
  name = lambda spec: re.split(r'[<>=!\[ ;]', spec, maxsplit=1)[0].lower().replace('_', '-')
  required = {name(s) for s in ast.literal_eval(kwargs['install_requires'])}
  optional = {name(s) for extra in ast.literal_eval(kwargs['extras_require']).values() for s in extra}
  return required, optional


def _third_party_imports() -> dict[str, str]:
  """{top-level module: a file importing it} over cosmos_jax/**.py (stdlib and the package itself excluded)."""
  out = {}
  for path in sorted((REPO / 'cosmos_jax').rglob('*.py')):
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
      names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
               [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
      for module in names:
        top = module.split('.')[0]
        if top not in sys.stdlib_module_names and top != 'cosmos_jax':
          out.setdefault(top, str(path.relative_to(REPO)))
  return out


def test_every_import_is_declared():
  required, optional = _declared()
  assert {'jax', 'flax', 'ml-dtypes', 'etils'} <= required and {'torch', 'tensorflow-datasets'} <= optional
  assert 'tensorflow-datasets' not in required  # the rlds extra
  missing = []
  for module, where in sorted(_third_party_imports().items()):
    if module in TRANSITIVE:
      continue
    dist = DISTRIBUTIONS.get(module, module)
    if dist is not None and dist.lower().replace('_', '-') not in required | optional:
      missing.append(f'{module} (distribution {dist!r}, imported by {where})')
  assert not missing, f'imported but not declared in setup.py: {missing}'


def test_core_imports_without_the_optional_extras():
  blocked = ', '.join(repr(m) for m in OPTIONAL)
  script = (f'import sys\nfor m in ({blocked},): sys.modules[m] = None  # an uninstalled module\n'
            'import cosmos_jax.train.trainer, cosmos_jax.convert.library, cosmos_jax.data.datasets\n'
            'import cosmos_jax.policy.planning, cosmos_jax.data.text\n'
            'from configs import aloha\naloha.get_config("tiny")\nprint("ok")\n')
  proc = subprocess.run([sys.executable, '-c', script], cwd=REPO, capture_output=True, text=True, check=False,
                        env={'PYTHONPATH': str(REPO), 'JAX_PLATFORMS': 'cpu', 'PATH': '/usr/bin:/bin'})
  assert proc.returncode == 0 and proc.stdout.strip() == 'ok', proc.stderr[-3000:]
