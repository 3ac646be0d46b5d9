"""The command-line convention shared by `dart.train`, `dart.evaluate`, `dart.data.toy` and `bench.*`.

Exit status: 0 done; 2 a user error (bad config, argument, file or data), reported as ONE line
`<prog>: <message naming the file or the config key>` on stderr, no traceback; 3 (dart.train only)
a non-finite loss. `key.sub=value` overrides may stand anywhere on the command line.
"""
from __future__ import annotations

import argparse
import sys

USER_ERROR = 2


class ArgumentParser(argparse.ArgumentParser):
    """argparse that accepts positionals (overrides) between options."""

    def parse_args(self, args=None, namespace=None):
        return self.parse_intermixed_args(args, namespace)


def user_error(prog: str, err: BaseException | str) -> int:
    """Print the one-line message of a user error and return the exit status."""
    text = str(err) or type(err).__name__
    print(f"{prog}: " + " ".join(text.split()), file=sys.stderr)
    return USER_ERROR


def positive_int_list(text: str) -> list[int]:
    """argparse type: '1,8,64' -> [1, 8, 64]; every value a positive integer."""
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not vals or any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"{text!r}: every value must be a positive integer")
    return vals
