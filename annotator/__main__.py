"""`python -m annotator ...` is the same as `vos-annotator ...`."""

import sys

from annotator.app import main

sys.exit(main())
