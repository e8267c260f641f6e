"""`python -m cosmos_jax.convert`'s command line: absl flags as every other command's, each command taking only its
own flags, and errors that name the problem (the conversions themselves: test_convert.py, test_t5_convert.py)."""

import pytest

from cosmos_jax.convert import __main__ as convert_main


def test_each_command_parses_its_flags_in_both_spellings():
  parsed = convert_main.parse(['dit', 'a.pt', 'out', '--layout', 'aloha', '--statistics=s.json', '--text_store',
                               'store', '--ema', '--dtype=bfloat16'])
  f = parsed.flags
  assert (parsed.command, parsed.positional) == ('dit', ['a.pt', 'out'])
  assert (f.layout, f.statistics, f.text_store, f.ema, f.dtype) == ('aloha', 's.json', 'store', True, 'bfloat16')
  parsed = convert_main.parse(['export', '--checkpoint=runs/a', '--out', 'p.pt', '--step=3', '--nouse_ema',
                               '--prefix', '', '--dtype=float16'])
  f = parsed.flags
  assert parsed.positional == []
  assert (f.checkpoint, f.out, f.step, f.use_ema, f.prefix) == ('runs/a', 'p.pt', 3, False, '')
  f = convert_main.parse(['export', '--checkpoint=runs/a', '--out=p.pt']).flags
  assert f.use_ema is None and f.step is None and f.prefix is None  # the checkpoint reader's defaults
  f = convert_main.parse(['t5', '--hf_dir=hf', '--out=t5', '--overwrite']).flags
  assert (f.hf_dir, f.out, f.overwrite) == ('hf', 't5', True)


@pytest.mark.parametrize('argv,message', [
    ([], r'give the command, one of \[.dit., .export., .t5., .vae.\]'),
    (['convert', 'a', 'b'], 'give the command'),
    (['dit', 'a.pt'], 'dit takes SOURCE DEST'),
    (['export', 'extra', '--checkpoint=c', '--out=o'], 'export takes no positional arguments'),
    (['export', '--checkpoint=c', '--out=o', '--preset=2B', '--ema'], 'export does not take --ema, --preset'),
    (['vae', 'a', 'b', '--use_ema'], 'vae does not take --use_ema'),
    (['export', '--out=o'], 'export needs --checkpoint'),
    (['t5', '--out=o'], 't5 needs --hf_dir'),
    (['dit', 'a', 'b', '--dtype=float16'], r"dit: --dtype must be one of \('keep', 'float32', 'bfloat16'\)"),
    (['dit', 'a', 'b', '--layout=droid'], 'layout'),
    (['dit', 'a', 'b', '--text-store=x'], 'text-store'),  # the former dashed spelling is refused
    (['export', '--checkpoint=c', '--out=o', '--step=two'], 'step'),
])
def test_bad_command_lines_are_refused_naming_the_problem(argv, message):
  with pytest.raises(ValueError, match=message):
    convert_main.parse(argv)


def test_main_exit_status_and_help(capsys):
  with pytest.raises(SystemExit) as exit_info:
    convert_main.main(['--help'])
  assert exit_info.value.code == 0
  out = capsys.readouterr().out
  for text in ('usage: python -m cosmos_jax.convert dit SOURCE DEST', '--text_store:', '--hf_dir:', '--[no]use_ema:',
               '--step:', 'examples:'):
    assert text in out, text
  for argv in ([], ['export', '--out=o']):  # the usage on a bare call; a bad command line
    with pytest.raises(SystemExit) as exit_info:
      convert_main.main(argv)
    assert exit_info.value.code == 2
  err = capsys.readouterr().err
  assert 'error: export needs --checkpoint' in err and 'usage: python -m cosmos_jax.convert' in err
