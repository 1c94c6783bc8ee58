"""python -m wgan_ext.train (and torchrun ... -m wgan_ext.train): the wgan-train command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
