"""`python -m api`: the same as the tcl-api console script."""

import sys

from api.app import main

sys.exit(main())
