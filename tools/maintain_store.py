"""Operator script: verify a store, and only if it is undamaged, prune it with gc.

    python tools/maintain_store.py runs/x/memory.zarr --keep 5 [--grace 600]

Calls the ``memstore`` command (``memstore verify``, then ``memstore gc``) so what it does is
exactly what an operator would type. Exits 1 (and prunes nothing) when verify finds damage,
so a cron job never garbage-collects the evidence of a problem.
"""

from __future__ import annotations

import argparse
import sys

from memstore.cli import main as memstore


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store")
    parser.add_argument("--keep", type=int, required=True, help="commits to keep per buffer")
    parser.add_argument("--grace", type=float, default=600.0, help="debris age in seconds")
    args = parser.parse_args(argv)
    status = memstore(["verify", args.store])
    if status != 0:
        print("maintain_store: damage found; not pruning", file=sys.stderr)
        return status
    return memstore(["gc", args.store, "--keep", str(args.keep), "--grace", str(args.grace)])


if __name__ == "__main__":
    sys.exit(main())
