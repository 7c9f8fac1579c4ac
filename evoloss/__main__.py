"""``python -m evoloss`` runs the command line."""
import sys

from evoloss.search.cli import main

sys.exit(main())
