"""`python -m server`: the same as `workflow-server`."""

import sys

from .cli import main

sys.exit(main())
