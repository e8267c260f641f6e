"""The package's import graph, read with `ast` over cosmos_jax/**.py: imports point one way, bottom to top
(nn -> policy -> data -> convert -> train | serve -> eval), and nothing is imported inside a function except the
optional heavy third-party libraries (imported late so that the package works without them)."""

from __future__ import annotations

import ast
import pathlib
import re
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / 'cosmos_jax'

# Layer of each subpackage; a module may import its own subpackage and any lower layer. train and serve share a
# layer and do not import each other.
LAYERS = {'nn': 0, 'policy': 1, 'data': 2, 'convert': 3, 'train': 4, 'serve': 4, 'eval': 5}

# Optional heavy third-party libraries: the only imports allowed inside a function (each with its reason
# written where it happens).
OPTIONAL_LATE_IMPORTS = frozenset({'torch', 'gymnasium', 'gym_aloha', 'mujoco', 'dm_control', 'tensorflow_datasets',
                                   'sentencepiece', 'pyarrow', 'av', 'matplotlib', 'libero', 'robosuite',
                                   'robocasa'})

# Edges not yet fixed by their owners (modules other agents are writing now): (importing module, imported
# module). Shrink these; never grow them.
KNOWN_UPWARD: frozenset[tuple[str, str]] = frozenset()
KNOWN_LATE: frozenset[tuple[str, str]] = frozenset()


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _imports(path: pathlib.Path):
  """(imported module, line, inside a function) of every import statement in `path`."""
  module = _module_name(path)
  is_package = path.name == '__init__.py'
  tree = ast.parse(path.read_text(encoding='utf-8'), filename=str(path))
  functions = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)

  def visit(node, in_function):
    for child in ast.iter_child_nodes(node):
      nested = in_function or isinstance(child, functions)
      if isinstance(child, ast.Import):
        for alias in child.names:
          yield alias.name, child.lineno, in_function
      elif isinstance(child, ast.ImportFrom):
        if child.level:  # relative: resolve against this module's package
          base = module.split('.') if is_package else module.split('.')[:-1]
          base = base[:len(base) - child.level + 1]
          source = '.'.join(base + ([child.module] if child.module else []))
        else:
          source = child.module
        if source == 'cosmos_jax' or source.startswith('cosmos_jax.'):
          # `from cosmos_jax.data import stats` imports the module cosmos_jax.data.stats.
          for alias in child.names:
            yield f'{source}.{alias.name}', child.lineno, in_function
        else:
          yield source, child.lineno, in_function
      yield from visit(child, nested)

  yield from visit(tree, False)


def _layer(module: str) -> str | None:
  parts = module.split('.')
  return parts[1] if len(parts) > 1 and parts[0] == 'cosmos_jax' and parts[1] in LAYERS else None


def _graph():
  upward, late = {}, {}
  for path in sorted(PACKAGE.rglob('*.py')):
    module = _module_name(path)
    for imported, line, in_function in _imports(path):
      where = f'{path.relative_to(PACKAGE.parent)}:{line}'
      own, other = _layer(module), _layer(imported)
      if own and other and other != own and LAYERS[other] >= LAYERS[own]:
        upward[(module, imported)] = where
      if in_function:
        top = imported.split('.')[0]
        if top == 'cosmos_jax' or top not in OPTIONAL_LATE_IMPORTS:
          late[(module, imported)] = where
  return upward, late


def test_the_graph_is_read():
  """The reader sees this repository's imports (a test that cannot fail would prove nothing)."""
  edges = {(module, imported) for path in PACKAGE.rglob('*.py') for module in [_module_name(path)]
           for imported, _, _ in _imports(path)}
  assert ('cosmos_jax.convert.library', 'cosmos_jax.nn.dit') in edges
  assert ('cosmos_jax.train.trainer', 'cosmos_jax.train.state') in edges
  assert ('cosmos_jax.data.text', 'torch') in edges


def test_no_upward_imports():
  upward, _ = _graph()
  new = {edge: where for edge, where in upward.items() if edge not in KNOWN_UPWARD}
  order = ' -> '.join(sorted(LAYERS, key=LAYERS.get))
  assert not new, (f'imports against the layer order ({order}; train and serve do not import each other):\n' +
                   '\n'.join(f'  {where}: {a} imports {b}' for (a, b), where in sorted(new.items())))


def test_no_imports_inside_functions():
  _, late = _graph()
  new = {edge: where for edge, where in late.items() if edge not in KNOWN_LATE}
  assert not new, ('imports inside functions (move them to the top of the module; only the optional heavy '
                   f'libraries {sorted(OPTIONAL_LATE_IMPORTS)} may be imported late):\n' +
                   '\n'.join(f'  {where}: {a} imports {b}' for (a, b), where in sorted(new.items())))


def test_known_violations_are_still_there():
  """The allow-lists only shrink: an entry that no longer occurs must be removed."""
  upward, late = _graph()
  stale = sorted((KNOWN_UPWARD - set(upward)) | (KNOWN_LATE - set(late)))
  assert not stale, f'fixed edges still listed in KNOWN_UPWARD / KNOWN_LATE, remove them: {stale}'


@pytest.mark.parametrize('source,expected', [
    ('import torch\ndef f():\n  import gym_aloha\n', {('torch', False), ('gym_aloha', True)}),
    ('def f():\n  from cosmos_jax.data import stats\n', {('cosmos_jax.data.stats', True)}),
    ('from . import layout\n', {('cosmos_jax.policy.layout', False)}),
])
def test_reader_resolves_imports(tmp_path, monkeypatch, source, expected):
  package = tmp_path / 'cosmos_jax'
  (package / 'policy').mkdir(parents=True)
  path = package / 'policy' / 'x.py'
  path.write_text(source)
  monkeypatch.setattr(sys.modules[__name__], 'PACKAGE', package)
  assert {(m, f) for m, _, f in _imports(path)} == expected


def _defines_flags_at_import(path: pathlib.Path) -> bool:
  """Whether the module defines absl flags outside functions (flags.DEFINE_*, config_flags.DEFINE_config_file,
  checkpoint_flags.define)."""
  tree = ast.parse(path.read_text(encoding='utf-8'), filename=str(path))
  functions = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)

  def calls(node):
    for child in ast.iter_child_nodes(node):
      if isinstance(child, functions):
        continue
      if isinstance(child, ast.Call) and isinstance(child.func, ast.Attribute):
        yield child.func
      yield from calls(child)

  return any(f.attr.startswith('DEFINE') or (f.attr == 'define' and isinstance(f.value, ast.Name) and
                                             f.value.id == 'checkpoint_flags') for f in calls(tree))


def test_command_modules_are_imported_by_nothing():
  """absl flags are defined once per process: a module that defines them when imported is a command, run as the
  program and imported by no module of the package, its tests or benchmarks (two imported commands would raise
  DuplicateFlagError). Their logic is in library modules (e.g. eval.evaluation.run)."""
  commands = {_module_name(path) for path in PACKAGE.rglob('*.py') if _defines_flags_at_import(path)}
  assert {'cosmos_jax.train.__main__', 'cosmos_jax.serve.__main__', 'cosmos_jax.eval.aloha_sim',
          'cosmos_jax.eval.libero_sim'} <= commands, commands
  root = PACKAGE.parent
  offending = []
  for path in sorted([*PACKAGE.rglob('*.py'), *(root / 'tests').rglob('*.py'), *(root / 'benchmarks').rglob('*.py')]):
    for imported, line, _ in _imports(path):
      if imported in commands:
        offending.append(f'{path.relative_to(root)}:{line} imports the command module {imported}')
  assert not offending, '\n'.join(offending)


def test_benchmarks_import_nothing_from_tests():
  """Shared fixtures live in the package or in benchmarks/, so a benchmark runs from a checkout without tests/."""
  offending = []
  for path in sorted((PACKAGE.parent / 'benchmarks').rglob('*.py')):
    text = path.read_text(encoding='utf-8')
    for node in ast.walk(ast.parse(text, filename=str(path))):
      names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
               [node.module or ''] if isinstance(node, ast.ImportFrom) else [])
      offending += [f'{path.name}:{node.lineno} imports {n}' for n in names if n.split('.')[0] == 'tests']
    # ...and none in the scripts it runs in child processes (source in strings).
    offending += [f'{path.name}: {line.strip()}' for line in text.splitlines()
                  if re.search(r'\bfrom tests\b|\bimport tests\b', line)
                  and not line.lstrip().startswith(('from', 'import'))]
  assert not offending, offending
