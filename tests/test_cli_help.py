"""Every `layerbound` subcommand's --help page says what it does, and every option says what it is."""

import argparse

from layerbound import cli


def _walk(parser: argparse.ArgumentParser, path: tuple[str, ...]):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, subparser in action.choices.items():
                yield from _walk(subparser, (*path, name))


def test_every_subcommand_has_a_description_and_every_option_a_help_line():
    commands = list(_walk(cli.build_parser(), ("layerbound",)))
    assert len(commands) > 20   # the walk reached the nested groups (figures, semirobust)
    for path, parser in commands:
        name = " ".join(path)
        assert parser.description and parser.description.strip(), f"{name} has no description"
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                listed = {choice.dest: choice.help for choice in action._choices_actions}
                missing = sorted(set(action.choices) - {k for k, v in listed.items() if v})
                assert not missing, f"{name}: subcommands without a summary line: {missing}"
            else:
                label = "/".join(action.option_strings) or action.dest
                assert action.help and action.help != argparse.SUPPRESS, f"{name} {label} has no help"


def test_the_help_pages_render():
    for path, parser in _walk(cli.build_parser(), ("layerbound",)):
        text = parser.format_help()   # a bad %-format in a help line raises here
        assert parser.description.split()[0] in text
