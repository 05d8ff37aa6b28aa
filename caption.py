"""Same as `captioner caption ...`."""
import sys

from captioner.cli import main

if __name__ == "__main__":
    sys.exit(main(["caption", *sys.argv[1:]]))
