"""Write webdataset tar shards from an ``.npz``, an image folder or synthetic data: a command
line over :func:`memstore.write_shards` / :func:`memstore.sources.shards.write_synthetic`.

Usage:
    python tools/make_shards.py 'out/train-%06d.tar' --npz data.npz [--maxcount 10000]
    python tools/make_shards.py 'out/train-%06d.tar' --images folder/   # class subfolders
    python tools/make_shards.py 'out/train-%06d.tar' --synthetic 1000000 --sample-bytes 3072 \\
        --classes 100 --seed 0

It prints the brace spec of the written shards (for ``memstore.ShardSource``).
"""

from __future__ import annotations

import argparse
import sys

from memstore.sources.shards import write_shards, write_synthetic


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pattern", help="output pattern with %%d, e.g. 'out/train-%%06d.tar'")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--npz", help=".npz file with arrays x and y")
    src.add_argument("--images", help="image folder: <root>/<class>/<image>")
    src.add_argument("--synthetic", type=int, metavar="N", help="N synthetic samples")
    parser.add_argument("--sample-bytes", type=int, default=3072)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--maxcount", type=int, default=10_000, help="samples per shard")
    args = parser.parse_args(argv)
    try:
        if args.synthetic is not None:
            out = write_synthetic(
                args.pattern,
                args.synthetic,
                sample_bytes=args.sample_bytes,
                classes=args.classes,
                seed=args.seed,
                maxcount=args.maxcount,
            )
        else:
            out = write_shards(args.npz or args.images, args.pattern, maxcount=args.maxcount)
    except (ValueError, TypeError, OSError) as err:
        print(f"make_shards: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out.count} samples in {len(out.paths)} shards: {out.spec}")
    if out.classes is not None:
        print("classes:", " ".join(f"{c}={name}" for c, name in enumerate(out.classes)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
