"""`python -m cosmos_jax.convert {dit,vae,export} ...`; see cosmos_jax/convert/cli.py."""

import sys

from cosmos_jax.convert import cli

if __name__ == '__main__':
  sys.exit(cli.main())
