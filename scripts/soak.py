"""`make soak`: the soak test (tests/harness/soak.py says what it does and reports).

python scripts/soak.py --repository DIR [--duration 300] [--concurrency 64] [--warmup 15] [--window 30]
                       [--state-dir .soak] [--json FILE]
"""

from __future__ import annotations

import sys
from pathlib import Path

# The test harness (tests/harness) holds the soak and each family's workload.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from harness.soak import main

if __name__ == "__main__":
    sys.exit(main())
