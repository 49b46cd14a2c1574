"""Entry point: benchmark (not implemented yet; see the open issues)."""

import sys

if __name__ == "__main__":
    sys.exit("benchmark.py is not implemented yet.")
