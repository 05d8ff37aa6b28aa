"""Same as `captioner train ...`; also works under `torchrun --nproc_per_node=N train.py ...`."""
import sys

from captioner.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
