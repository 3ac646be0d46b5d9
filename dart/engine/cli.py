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


def _int_at_least(text: str, minimum: int, rule: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < minimum:
        raise argparse.ArgumentTypeError(f"{text!r} {rule}")
    return v


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (a batch size of 0 measures nothing)."""
    return _int_at_least(text, 1, "must be a positive integer")


def nonnegative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _int_at_least(text, 0, "must not be negative")


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
