"""``python -m depthmetric``: the command line of the training application (``depthmetric.training.cli``)."""
import sys

from .training.cli import main

if __name__ == "__main__":
    sys.exit(main())
