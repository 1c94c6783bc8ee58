"""python -m wgan_ext.eval: the wgan-eval command."""

import sys

from .runs import main

if __name__ == "__main__":
    sys.exit(main())
