"""memarch.errors: which exceptions are user errors, and the lines the command line prints."""

import pytest

from memarch.errors import (
    ConfigError,
    ConfigFileError,
    UserError,
    is_user_error,
    line_in_file,
    user_error_lines,
)


def test_user_errors_are_value_errors():
    assert issubclass(ConfigError, UserError) and issubclass(UserError, ValueError)
    assert issubclass(ConfigFileError, UserError)


@pytest.mark.parametrize(
    "err,lines",
    [
        (ConfigError("model.d_model must be an int >= 1; got -8"), ["model.d_model must be"]),
        (ValueError("a\nb"), ["a", "b"]),
        (ValueError("a\nb\nc\n\nd"), ["a", "(3 more lines: --debug or MEMARCH_DEBUG=1"]),
        (FileNotFoundError(2, "No such file or directory", "/x/y.json"), ["No such file"]),
        (IsADirectoryError(21, "Is a directory", "/x"), ["Is a directory: '/x'"]),
        (ValueError(""), ["ValueError"]),
    ],
)
def test_user_error_lines(err, lines):
    out = user_error_lines(err)
    assert is_user_error(err) and len(out) == len(lines) <= 2
    assert all(o.startswith(x) for o, x in zip(out, lines, strict=True))


@pytest.mark.parametrize("err", [TypeError("x"), KeyError("k"), RuntimeError("r")])
def test_other_exceptions_are_bugs(err):
    assert not is_user_error(err) and user_error_lines(err) is None


def test_config_file_error_names_file_and_line(tmp_path):
    path = tmp_path / "c.py"
    path.write_text("def f():\n    return {}['k']\n")
    namespace = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    with pytest.raises(KeyError) as info:
        namespace["f"]()
    assert line_in_file(info.value, path) == 2
    assert line_in_file(info.value, tmp_path / "other.py") is None
    err = ConfigFileError(path, 2, info.value)
    assert str(err) == f"{path}, line 2: KeyError: 'k'" and err.cause is info.value
    assert str(ConfigFileError(path, None, ValueError("bad"))) == f"{path}: bad"
