"""``python -m densevis`` (also what ``torchrun -m densevis`` runs)."""

import sys

from densevis.cli import main

sys.exit(main())
