from __future__ import annotations

import sys

from ctcd.serving.server import main

sys.exit(main())
