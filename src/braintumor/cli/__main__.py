"""``python -m braintumor.cli``: the same entry point as the ``braintumor`` command."""

import sys

from braintumor.cli import main

sys.exit(main())
