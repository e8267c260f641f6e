"""Every `python -m ...` command the README shows answers `--help` (run side by side, each in its own process).

The tiny variants run end to end in their own tests: training (tests/train/test_train.py, test_tiny_variants.py),
serving (tests/serve/test_cli.py) and evaluation (tests/eval/test_aloha_sim.py)."""

import os
import pathlib
import re
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def readme_modules() -> list[str]:
  text = (REPO / 'README.md').read_text(encoding='utf-8')
  return sorted({m for m in re.findall(r'python -m ([A-Za-z_][\w.]*)', text) if m.startswith('cosmos_jax')})


def test_readme_commands_answer_help():
  modules = readme_modules()
  assert {'cosmos_jax.train', 'cosmos_jax.convert', 'cosmos_jax.serve'} <= set(modules), modules
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHONPATH': str(REPO)}
  procs = {m: subprocess.Popen([sys.executable, '-m', m, '--help'], cwd=REPO, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True) for m in modules}
  failures = []
  for module, proc in procs.items():
    out, _ = proc.communicate(timeout=300)
    # The tools on cosmos_jax.command_line (convert, data) print their usage and exit 0; the config-driven
    # commands (train, serve, eval) print absl's flag list and exit 1.
    tool_help = proc.returncode == 0 and out.startswith('usage: python -m ' + module.removesuffix('.__main__'))
    absl_help = proc.returncode == 1 and '--config' in out and 'Traceback' not in out
    if not (tool_help or absl_help):
      failures.append(f'python -m {module} --help: exit {proc.returncode}\n{out[-1500:]}')
  assert not failures, '\n\n'.join(failures)
