"""cosmos_jax.command_line: a tool's absl flags parsed per call, and every tool on it (convert's commands in detail:
tests/convert/test_convert_cli.py)."""

import importlib

import pytest
from absl import flags

from cosmos_jax import command_line


def _define(flag_values):
  flags.DEFINE_string('out', None, 'output', flag_values=flag_values)
  flags.DEFINE_integer('image_size', 64, 'size', flag_values=flag_values)
  flags.DEFINE_bool('overwrite', False, 'replace', flag_values=flag_values)


TOOL = command_line.CommandLine('python -m tool', _define, {'': command_line.Command(('DATASET',), required=('out',))},
                                'usage: python -m tool DATASET --out=DIR', description='A tool.')


def test_a_tool_without_subcommands_parses_per_call():
  parsed = TOOL.parse(['data', '--out', 'o', '--image_size=32', '--overwrite'])
  assert (parsed.command, parsed.positional) == ('', ['data'])
  assert (parsed.flags.out, parsed.flags.image_size, parsed.flags.overwrite) == ('o', 32, True)
  again = TOOL.parse(['data', '--out=p'])  # a fresh FlagValues: nothing carried over from the first call
  assert (again.flags.out, again.flags.image_size, again.flags.overwrite) == ('p', 64, False)


@pytest.mark.parametrize('argv,message', [
    (['--out=o'], r"takes DATASET, got \[\]"),
    (['a', 'b', '--out=o'], r"takes DATASET, got \['a', 'b'\]"),
    (['a'], 'needs --out'),
    (['a', '--out=o', '--image-size=3'], "Unknown command line flag 'image-size'"),
])
def test_bad_command_lines_name_the_problem(argv, message):
  with pytest.raises(ValueError, match=message):
    TOOL.parse(argv)


def test_parse_or_exit_is_the_program(capsys):
  with pytest.raises(SystemExit) as exit_info:
    TOOL.parse_or_exit(['--help'])
  assert exit_info.value.code == 0
  out = capsys.readouterr().out
  assert out.startswith('usage: python -m tool DATASET') and '--image_size: size' in out and '--[no]overwrite' in out
  with pytest.raises(SystemExit) as exit_info:
    TOOL.parse_or_exit(['a'])
  assert exit_info.value.code == 2 and 'error: tool needs --out' in capsys.readouterr().err
  assert TOOL.parse_or_exit(['a', '--out=o']).positional == ['a']


@pytest.mark.parametrize('module,argv,expected', [
    ('cosmos_jax.data.preprocess_aloha', ['raw', 'out', '--percent_val=0.4', '--workers', '1'],
     ('', ['raw', 'out'], {'percent_val': 0.4, 'workers': 1, 'image_size': 256})),
    ('cosmos_jax.data.inspect', ['data', '--out=o', '--layout=libero'],
     ('', ['data'], {'out': 'o', 'layout': 'libero', 'format': None, 'image_size': 64})),
    ('cosmos_jax.data.make_sample', ['--measure', '--seeds=5', '--json', 'x.json'],
     ('', [], {'measure': True, 'seeds': 5, 'json': 'x.json', 'task': 'transfer_cube'})),
    ('cosmos_jax.data.make_tiny_samples', ['--out_root=/tmp/x'], ('', [], {'out_root': '/tmp/x'})),
    ('cosmos_jax.data.text', ['encode', '--t5=t', '--prompts=p', '--store=s', '--batch_size=3'],
     ('encode', [], {'t5': 't', 'batch_size': 3, 'dtype': 'float32'})),
    ('cosmos_jax.convert.__main__', ['export', '--checkpoint=c', '--out=o', '--nouse_ema'],
     ('export', [], {'checkpoint': 'c', 'use_ema': False, 'step': None})),
])
def test_every_tool_parses_absl_flags(module, argv, expected):
  cli = importlib.import_module(module).CLI
  parsed = cli.parse(argv)
  command, positional, values = expected
  assert (parsed.command, parsed.positional) == (command, positional)
  assert {name: parsed.flags[name].value for name in values} == values
  help_text = cli.help()
  assert help_text.startswith('usage: python -m cosmos_jax.') and all(f'{n}:' in help_text for n in values)
