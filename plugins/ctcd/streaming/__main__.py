from __future__ import annotations

import sys

from ctcd.streaming.main import main

sys.exit(main())
