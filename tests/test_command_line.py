"""cosmos_jax.command_line: a tool's absl flags parsed per call (convert's commands: tests/convert/test_convert_cli.py)."""

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
  assert exit_info.value.code == 2 and 'error: needs --out' in capsys.readouterr().err
  assert TOOL.parse_or_exit(['a', '--out=o']).positional == ['a']
