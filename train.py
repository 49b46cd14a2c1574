"""Entry point: train (not implemented yet; see the open issues)."""

import sys

if __name__ == "__main__":
    sys.exit("train.py is not implemented yet.")
