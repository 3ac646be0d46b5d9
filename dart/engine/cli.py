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


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (a batch size of 0 measures nothing)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive integer")
    return v


def nonnegative_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return v


def check_writable(path: str, what: str = "--out") -> None:
    """Fail before any measurement if `path` cannot be written: create its folder and a scratch file."""
    import os
    import tempfile
    d = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(d, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".write-test-", dir=d)
        os.close(fd)
        os.unlink(tmp)
        if os.path.isdir(path):
            raise IsADirectoryError(f"{path} is a directory")
    except OSError as e:
        raise ValueError(f"{what} {path} cannot be written: {e.strerror or e}") from e
