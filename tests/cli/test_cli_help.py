"""Every option (and positional argument) of every command says what it is in `--help`."""
import argparse
import importlib

import pytest

from dino_demo.cli import COMMANDS


class _Parsed(Exception):
    """Raised instead of parsing: carries the command's parser."""


def command_parser(name: str, monkeypatch) -> argparse.ArgumentParser:
    """The parser command `name` builds, caught when its `main` asks it to parse."""
    def caught(parser, *args, **kwargs):
        raise _Parsed(parser)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", caught)
    with pytest.raises(_Parsed) as parsed:
        importlib.import_module(COMMANDS[name][0]).main([])
    return parsed.value.args[0]


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_option_of_every_command_has_help(name, monkeypatch):
    parser = command_parser(name, monkeypatch)
    actions = [action for action in parser._actions if not isinstance(action, argparse._HelpAction)]
    assert actions, f"{name} has no arguments?"
    missing = [action.option_strings or [action.dest] for action in actions
               if not (action.help or "").strip() or action.help == argparse.SUPPRESS]
    assert not missing, f"{name}: options without help: {missing}"


def test_synthetic_help_describes_its_options(capsys):
    from dino_demo.cli import main

    with pytest.raises(SystemExit):
        main(["synthetic", "--help"])
    text = capsys.readouterr().out
    for words in ("the data set's seed", "how many scenes", "side of the square scenes", "shapes attempted",
                  "output folder"):
        assert words in text, words
