"""``python -m detbal`` runs the command line."""

import sys

from detbal.cli import main

sys.exit(main())
