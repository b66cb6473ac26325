"""``python -m mask_db``: see mask_db.cli."""

import sys

from mask_db.cli import main

sys.exit(main())
