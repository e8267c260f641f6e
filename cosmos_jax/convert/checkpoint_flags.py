"""`--checkpoint`, `--step`, `--use_ema` (and `--merge_lora`, for commands with a config section): the shorthands
every command that reads a policy checkpoint takes (serve, the ALOHA and LIBERO evaluations; convert export without
a config), each standing for the config field of the same name in one section (`--checkpoint=X` is
`--config.model.checkpoint=X` for serve, `--config.policy.checkpoint=X` for eval).

The fields are read by `checkpoint.open_checkpoint`. A command calls `define` at the top of its module, then
`flags.adopt_module_key_flags(checkpoint_flags)` for `--help` to list them (absl lists only the main module's key
flags). absl flags are defined once per process, so only command modules, which nothing imports, define them.
"""

from __future__ import annotations

import dataclasses

from absl import flags


@dataclasses.dataclass(frozen=True)
class CheckpointFlags:
  """The flags of a command and the config section they fill."""
  section: str | None
  checkpoint: flags.FlagHolder
  step: flags.FlagHolder
  use_ema: flags.FlagHolder
  merge_lora: flags.FlagHolder | None = None

  def apply(self, config) -> None:
    """Writes each flag that was given over its field of `config.<section>` (a locked config is fine)."""
    if self.section is None:
      raise ValueError('these checkpoint flags fill no config section (defined with section=None)')
    with config.unlocked():
      for holder in (self.checkpoint, self.step, self.use_ema, self.merge_lora):
        if holder is not None and holder.value is not None:
          config[self.section][holder.name] = holder.value


def define(section: str | None, flag_values: flags.FlagValues = flags.FLAGS) -> CheckpointFlags:
  """Defines the flags in `flag_values`, documented as shorthands of `--config.<section>.<name>` (`section` None: a
  command without a config, which reads the holders itself)."""

  def same(name: str) -> str:
    return f'; = --config.{section}.{name}' if section else ''

  return CheckpointFlags(
      section=section,
      checkpoint=flags.DEFINE_string('checkpoint', None, 'A training workdir or a checkpoint directory (trained or '
                                     f'converted{same("checkpoint")}).', flag_values=flag_values),
      step=flags.DEFINE_integer('step', None, f'Training step of --checkpoint (default: the latest{same("step")}).',
                                flag_values=flag_values),
      use_ema=flags.DEFINE_bool('use_ema', None, 'EMA parameters of --checkpoint (default: when the run kept an EMA'
                                f'{same("use_ema")}).', flag_values=flag_values),
      merge_lora=flags.DEFINE_bool('merge_lora', None, 'A LoRA checkpoint: merge the adapters into their base at load '
                                   f'(default, fast) or keep them separate (--nomerge_lora{same("merge_lora")}).',
                                   flag_values=flag_values) if section else None)
