"""absl flags for the commands that are also called as functions (`python -m cosmos_jax.convert`, the data tools).

They are spelled as the config-driven commands' (train, serve, eval): `--text_store=DIR` or `--text_store DIR`,
`--[no]overwrite`. Each call parses into a fresh `FlagValues`, so importing a tool or calling it twice in one
process defines nothing globally. A tool lists its commands (or has one, named ''), each with its positional
arguments, the flags it takes and the flags it requires; any other flag given is refused by name.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Mapping, Sequence

from absl import flags

HELP_FLAGS = ('--help', '-h', '--helpfull')


@dataclasses.dataclass(frozen=True)
class Command:
  positional: tuple[str, ...] = ()  # names of the positional arguments, all required
  flags: tuple[str, ...] | None = None  # the flags it takes (None: every flag of the tool)
  required: tuple[str, ...] = ()  # flags without a default that must be given


@dataclasses.dataclass(frozen=True)
class Parsed:
  command: str
  positional: list[str]
  flags: flags.FlagValues


@dataclasses.dataclass(frozen=True)
class CommandLine:
  prog: str  # 'python -m cosmos_jax.convert'
  define: Callable[[flags.FlagValues], None]  # defines every flag of the tool in the FlagValues it is given
  commands: Mapping[str, Command]  # {'': Command(...)} for a tool without subcommands
  usage: str  # the usage lines, starting with 'usage: '
  description: str = ''
  epilog: str = ''  # examples

  def flag_values(self) -> flags.FlagValues:
    flag_values = flags.FlagValues()
    self.define(flag_values)
    return flag_values

  def help(self) -> str:
    flag_values = self.flag_values()
    lines = [self.usage, '', self.description, '', 'flags:'] if self.description else [self.usage, '', 'flags:']
    for name in sorted(flag_values):
      flag = flag_values[name]
      lines.append(f'  --{"[no]" if flag.boolean else ""}{name}: {flag.help}')
    return '\n'.join(lines + (['', self.epilog] if self.epilog else []))

  def parse(self, argv: Sequence[str]) -> Parsed:
    """`argv` (without the program name) parsed; a ValueError names what is wrong (an unknown command or flag, a
    flag of another command, a missing argument)."""
    flag_values = self.flag_values()
    try:
      rest = flag_values([self.prog, *argv])[1:]
    except flags.Error as e:
      raise ValueError(str(e)) from None
    if '' in self.commands:
      name = ''
    elif rest and rest[0] in self.commands:
      name, rest = rest[0], rest[1:]
    else:
      raise ValueError(f'give the command, one of {sorted(self.commands)}, got {rest[:1]}')
    command = self.commands[name]
    what = f'{name or self.prog.split()[-1]} '  # the subcommand, or the tool
    if len(rest) != len(command.positional):
      raise ValueError(f'{what}takes {" ".join(command.positional) or "no positional arguments"}, got {rest}')
    if command.flags is not None:
      foreign = sorted(n for n in flag_values if flag_values[n].present and n not in command.flags)
      if foreign:
        raise ValueError(f'{what}does not take {", ".join("--" + n for n in foreign)}; its flags: '
                         f'{", ".join("--" + n for n in command.flags)}')
    missing = [n for n in command.required if flag_values[n].value is None]
    if missing:
      raise ValueError(f'{what}needs {", ".join("--" + n for n in missing)}')
    return Parsed(name, rest, flag_values)

  def parse_or_exit(self, argv: Sequence[str] | None = None) -> Parsed:
    """`parse`, as a program: `--help` prints the help and exits 0; a bare call of a tool with subcommands prints
    it and exits 2; bad flags print the error and the usage to stderr and exit 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(a in HELP_FLAGS for a in argv) or (not argv and '' not in self.commands):
      print(self.help(), file=sys.stdout if argv else sys.stderr)
      raise SystemExit(0 if argv else 2)
    try:
      return self.parse(argv)
    except ValueError as e:
      print(f'error: {e}\n{self.usage}', file=sys.stderr)
      raise SystemExit(2) from None
