"""``python -m axkern``: the same command line as the ``axkern`` console script."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
