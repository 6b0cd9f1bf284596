"""``python -m secml.stack``."""

import sys

from secml.stack.cli import main

sys.exit(main())
