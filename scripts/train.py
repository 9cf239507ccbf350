#!/usr/bin/env python
"""Train or fine-tune an image classifier from a YAML config; any config key can be overridden as --key value.

    python scripts/train.py --config configs/demo/digits_inceptionnext_a.yaml
    torchrun --nproc_per_node 8 scripts/train.py --config configs/imagenet/inceptionnext_t.yaml --data-dir /data/imagenet
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from inceptionnext.train import CheckpointError, ConfigError, DataError, TrainError, fit, parse_config  # noqa: E402


def main(argv=None) -> int:
    try:
        cfg = parse_config(argv)
        fit(cfg)
    except (ConfigError, DataError, CheckpointError, TrainError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
