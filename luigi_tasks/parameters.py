"""Bad parameter values, from the command line or luigi.cfg, as one line naming where, what and what is expected.

luigi parses a value deep inside task creation, and a bad one surfaces as a traceback of a ValueError that
names neither the option nor the config key (`Yellow is not a valid choice from {...}`). A task or config
section with `NamedParameterErrors` fails instead with a DataError such as
    --service 'Yellow': expected one of yellow, green, fhv, fhvhv
    [tlc] source 'Parquet': expected one of auto, csv, parquet
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import luigi
import luigi.configuration
from luigi.cmdline_parser import CmdlineParser

from luigi_tasks.errors import DataError


class OptionNamed:
    """A parameter that knows its command-line option: luigi's command line parses the root task's own
    options (`--service`) itself, before any task exists, so the parameter must name itself in its error."""

    option = "the value"

    def __set_name__(self, owner: type, name: str) -> None:
        if hasattr(super(), "__set_name__"):  # luigi 3.6+ keeps the name for its descriptor
            super().__set_name__(owner, name)
        self.option = "--" + name.replace("_", "-")

    def bad(self, value: object) -> DataError:
        return DataError(f"{self.option} {value!r}: expected {expected(self)}")


def named_as(parameter: luigi.Parameter, option: str) -> luigi.Parameter:
    """The parameter, naming a command's own argument in its errors (as it names its option under luigi)."""
    parameter.option = option
    return parameter


class ChoiceParameter(OptionNamed, luigi.ChoiceParameter):
    """luigi's ChoiceParameter, whose error names the option and lists the choices in the order given."""

    def __init__(self, *, choices: Sequence[str], **kwargs) -> None:
        super().__init__(choices=choices, **kwargs)
        self.expected = "one of " + ", ".join(choices)

    def normalize(self, x: str) -> str:
        try:
            return super().normalize(x)
        except ValueError:
            raise self.bad(x) from None


def expected(param: luigi.Parameter) -> str:
    """What a value of `param` looks like, for a person."""
    if getattr(param, "expected", None):
        return param.expected
    if isinstance(param, luigi.BoolParameter):
        return "true or false"
    if isinstance(param, luigi.IntParameter):
        return "a whole number"
    if isinstance(param, luigi.FloatParameter):
        return "a number"
    return f"a value for {type(param).__name__}"


def _given(family: str, name: str, param: luigi.Parameter, kwargs: dict) -> tuple[str, object, Callable] | None:
    """Where the value luigi uses for a parameter was given, the value as given and how luigi reads it.

    The order is luigi's (Parameter._value_iterator): a keyword in code, the command line, the config
    file; None when the default applies (it needs no parsing).
    """
    if name in kwargs:
        return f"{family} {name}", kwargs[name], param.normalize
    parser = CmdlineParser.get_instance()
    option = name.replace("_", "-")
    found = getattr(parser.known_args, param._parser_global_dest(name, family), None) if parser else None
    if found:  # luigi skips an empty value too
        root = getattr(parser.known_args, "root_task", None)
        return (f"--{option}" if root == family else f"--{family}-{option}"), found, param.parse
    config = luigi.configuration.get_config()
    if config.has_option(family, name):
        return f"[{family}] {name}", config.get(family, name), param.parse
    return None


def bad_value(family: str, params: list[tuple[str, luigi.Parameter]], kwargs: dict) -> str | None:
    """The first parameter value that luigi cannot read, as one line; None if every one reads."""
    for name, param in params:
        given = _given(family, name, param, kwargs)
        if given is None:
            continue
        where, value, read = given
        try:
            read(value)
        except Exception:
            return f"{where} {value!r}: expected {expected(param)}"
    return None


class NamedParameterErrors:
    """Mixin for a luigi Task or Config: a value luigi cannot read fails with `bad_value`'s line."""

    @classmethod
    def get_param_values(cls, params, args, kwargs):
        try:
            return super().get_param_values(params, args, kwargs)
        except luigi.parameter.MissingParameterException:
            family = cls.get_task_family()
            name, param = next((n, p) for n, p in params if n not in kwargs and not p.has_task_value(family, n))
            raise DataError(f"--{name.replace('_', '-')} is missing: expected {expected(param)}") from None
        except Exception:
            message = bad_value(cls.get_task_family(), params, kwargs)
            if message is None:
                raise  # not a bad value (a bug): luigi's own error
            raise DataError(message) from None
