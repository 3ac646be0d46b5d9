"""The machine around a benchmark: CPU count and load average before and after it.

    python machine_load.py OUT.json -- COMMAND ...

Runs COMMAND and writes OUT.json ({"cpus", "load_before", "load_after", "rc"}); exits with the
command's status. A sweep measured beside other work reads slower: the report prints this beside
the speed figures. Standard library only (it runs in every rule environment).
"""
import json
import os
import subprocess
import sys


def load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:  # not available on this platform
        return None


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        sys.exit(__doc__)
    out, cmd = argv[0], argv[2:]
    before = load()
    rc = subprocess.call(cmd)
    info = {"cpus": os.cpu_count(), "load_before": before, "load_after": load(), "rc": rc}
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(info, f)
    os.replace(tmp, out)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
