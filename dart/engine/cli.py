"""The command-line convention shared by `dart.train`, `dart.evaluate`, `dart.data.toy` and `bench.*`.

Exit status: 0 done; 2 a user error (bad config, argument, file or data), reported as ONE line
`<prog>: <message naming the file or the config key>` on stderr, no traceback; 3 (dart.train only)
a non-finite loss. `key.sub=value` overrides may stand anywhere on the command line.
`--model-kwargs` (bench.*, dart.viz) is read by one parser, `parse_kwargs`: JSON or key=val,key=val.
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


def positive_float(text: str) -> float:
    """argparse type: a number > 0 (a duration or an interval)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
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


# ------------------------------------------------------------------ model keyword arguments

def parse_value(text: str):
    """A command-line value: JSON, else a Python literal (True, None, 'a'), else the string."""
    import ast
    import json
    text = text.strip()
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(text)
        except (ValueError, SyntaxError):
            continue
    return text


def split_items(text: str) -> list[str]:
    """Split on commas outside brackets and quotes: 'img_size=[64,64],depth=1' is two items."""
    items, depth, quote, cur = [], 0, None, []
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    if cur:
        items.append("".join(cur))
    return [i for i in (s.strip() for s in items) if i]


def parse_kwargs(text: str) -> dict:
    """Model keyword arguments as the command lines take them (`--model-kwargs` of bench.* and
    dart.viz): a JSON object, or key=value pairs separated by commas, each value read by
    `parse_value` ('img_size=64,scorer=cnn'). A ValueError names what is wrong."""
    import json
    text = (text or "").strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            out = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"model kwargs {text!r} are not a valid JSON object ({e})") from None
        return out
    out = {}
    for item in split_items(text):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"model kwarg {item!r} is not key=value")
        out[key.strip()] = parse_value(value)
    return out


def kwargs_arg(text: str) -> dict:
    """argparse type of `--model-kwargs`: `parse_kwargs`, its error as argparse's."""
    try:
        return parse_kwargs(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
