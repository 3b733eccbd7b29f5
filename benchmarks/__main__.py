"""`python -m benchmarks ...` (from the repository root): see `benchmarks.run`."""

import sys

from benchmarks.run import main

sys.exit(main())
