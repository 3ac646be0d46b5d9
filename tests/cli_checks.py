"""Checks shared by the tests of the command lines' one-line errors."""


def one_line_error(capsys, prog: str, *names: str) -> str:
    """The single `<prog>: ...` line on stderr (no traceback), which must name each of `names`."""
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if ln.startswith(prog + ": ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for n in names:
        assert n in lines[0], (n, lines[0])
    return lines[0]
