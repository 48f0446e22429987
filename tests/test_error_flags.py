"""Every flag an error message of daimlib advises exists on the command line, and every ``--set KEY``
it advises names a config key (issue 25 item 4: advice a user can follow)."""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

import pytest

from daimlib.__main__ import build_parser
from daimlib.config import DAIMConfig, flatten

PKG = Path(__file__).resolve().parents[1] / "daimlib"
FLAG = re.compile(r"(?<![\w-])--([a-z][a-z0-9_-]*)")
SET_KEY = re.compile(r"--set ([a-z_]+\.[a-z_]+)(?==)")
# flags of other programs that a message may quote, with the program's name
OTHER_PROGRAMS: dict[str, str] = {"--force-reinstall": "pip"}
LOGGERS = {"warn", "warning", "error", "info", "exception"}


def _strings(node: ast.AST) -> list[str]:
    """The text of every string in ``node``: f-strings with ``{}`` where a value goes."""
    out = []
    for n in ast.walk(node):
        if isinstance(n, ast.JoinedStr):
            out.append("".join(v.value if isinstance(v, ast.Constant) else "{}" for v in n.values))
        elif isinstance(n, ast.Constant) and isinstance(n.value, str):
            out.append(n.value)
    return out


def _is_message_call(call: ast.Call) -> bool:
    f = call.func
    name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
    if name == "print":
        return any(k.arg == "file" for k in call.keywords)  # print(..., file=sys.stderr)
    return name in LOGGERS


def error_messages() -> list[tuple[str, str]]:
    """``(file:line, text)`` of every raised error, warning, log call and stderr print in daimlib."""
    found = []
    for path in sorted(PKG.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Raise) and node.exc is not None:
                texts = _strings(node.exc)
            elif isinstance(node, ast.Call) and _is_message_call(node):
                texts = _strings(node)
            else:
                continue
            where = f"{path.relative_to(PKG.parent).as_posix()}:{node.lineno}"
            found += [(where, t) for t in texts]
    return found


def known_flags() -> set[str]:
    """Every option string of the command line: the top level and each command's."""
    parser = build_parser()
    flags = set(parser._option_string_actions)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                flags |= set(sub._option_string_actions)
    return flags


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_the_scan_finds_the_messages_it_is_meant_to_check():
    texts = " ".join(t for _, t in error_messages())
    assert "--strict refuses it" in texts  # a raise in __main__
    assert "--set text.tokenizer=DIR" in texts  # the tokenizer advice of evaluate
    assert "--list-globals" in texts and "--tokenizer DIR" in texts  # import-reference
    assert {"--set", "--resume", "--tokenizer", "--protocol", "--strict"} <= known_flags()


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_every_flag_an_error_message_names_exists_on_the_command_line():
    flags = known_flags()
    missing = sorted(
        {
            (where, f"--{m}")
            for where, text in error_messages()
            for m in FLAG.findall(text)
            if f"--{m}" not in flags and f"--{m}" not in OTHER_PROGRAMS
        }
    )
    assert not missing, f"error messages name flags no command has: {missing}"


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_every_set_key_an_error_message_names_is_a_config_key():
    keys = set(flatten(DAIMConfig().to_dict()))
    bad = sorted(
        {(where, key) for where, text in error_messages() for key in SET_KEY.findall(text) if key not in keys}
    )
    assert not bad, f"error messages advise --set with keys the config does not have: {bad}"
