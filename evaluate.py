"""Entry point: evaluate (not implemented yet; see the open issues)."""

import sys

if __name__ == "__main__":
    sys.exit("evaluate.py is not implemented yet.")
