"""`python -m app`: the Stepwise command line."""

import sys

from app.cli import main

sys.exit(main())
