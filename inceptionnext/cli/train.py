"""`inceptionnext train`: train or fine-tune a classifier, segmenter or detector from a YAML config; any config key can be
overridden as --key value.

    inceptionnext train --config configs/demo/digits_inceptionnext_a.yaml
    torchrun --nproc_per_node 8 scripts/train.py --config configs/imagenet/inceptionnext_t.yaml --data-dir /data/imagenet
"""

import sys

from ..train import CheckpointError, ConfigError, DataError, TrainError, fit, parse_config
from ..train.engine import RunInterrupted
from ..utils.text import error_message, escape_control
from ..utils.threads import command_threads
from ..utils.workers import loader_workers

INTERRUPTED = 130  # the shell's status for a command ended by SIGINT


def cli(argv=None, prog: str = "inceptionnext train") -> int:
    try:
        cfg = parse_config(argv, prog=prog)
        with command_threads(loader_workers(cfg.workers)[0]):  # the cores less the loader's workers, for the run
            fit(cfg)
    except (ConfigError, DataError, CheckpointError, TrainError, OSError) as e:  # OSError: e.g. a full disk
        print(f"error: {escape_control(error_message(e), keep_newlines=True)}", file=sys.stderr, flush=True)
        return 1
    except RunInterrupted as e:  # Ctrl-C: one line naming the checkpoint to resume from
        print(escape_control(e), file=sys.stderr, flush=True)
        return INTERRUPTED
    except KeyboardInterrupt:  # before the run started
        print("interrupted: no run was started", file=sys.stderr, flush=True)
        return INTERRUPTED
    return 0
