"""``pipeline submit``'s job parameter options, generated from the parameter declaration.

Written by hand, the options had drifted from the job files: five parameters (covariance,
returns, expected_returns, ewma_span, reference_file) could not be set from the command line,
and ``--size`` repeated the bounds ``IntRange(10, 100)``. Here each field of
:class:`orchestrator.jobs.params.Parameters` becomes one option: numbers with bounds an
``IntRange``/``FloatRange`` (open where the field says gt/lt), a Literal or Enum a ``Choice``,
a bool a ``--name/--no-name`` flag, text a string; the help is the field's description.

No option has a default: an option the user did not give is None and is not sent, so the
defaults stay the model's and the settings' (``PIPELINE_PORTFOLIO_SIZE``...). A refused value
is worded by the field itself (``params.problem``), as a job file or the API words it.
"""

from __future__ import annotations

import enum
import typing
from collections.abc import Callable
from typing import Any

import click
from pydantic.fields import FieldInfo

from orchestrator.jobs import params


class _Declared(click.ParamType):
    """Converts with click's plain type, then lets the field refuse in its own words."""

    parameter: str
    plain: click.ParamType | None = None

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None,
                ) -> Any:
        typed = self.plain.convert(value, param, ctx) if self.plain is not None else value
        problem = params.problem(self.parameter, typed)
        if problem is not None:
            self.fail(problem, param, ctx)
        return super().convert(typed, param, ctx)


class DeclaredIntRange(_Declared, click.IntRange):
    plain = click.INT


class DeclaredFloatRange(_Declared, click.FloatRange):
    plain = click.FLOAT


class DeclaredChoice(_Declared, click.Choice):  # type: ignore[misc]
    def get_metavar(self, *args: Any, **kwargs: Any) -> str | None:
        shown = super().get_metavar(*args, **kwargs)  # a tab among the choices: shown as \t
        return shown.replace("\t", "\\t") if shown else shown


def param_type(name: str) -> click.ParamType | None:
    """The click type of parameter ``name``; None for a bool (a flag)."""
    kind = params.value_type(name)
    limits = params.bounds(name)
    ranged = {"min": limits.low, "max": limits.high, "min_open": limits.low_open,
              "max_open": limits.high_open}
    made: click.ParamType
    if typing.get_origin(kind) is typing.Literal:
        made = DeclaredChoice([str(c) for c in params.choices(name)])
    elif isinstance(kind, type) and issubclass(kind, enum.Enum):
        made = DeclaredChoice([str(member.value) for member in kind])
    elif kind is bool:
        return None
    elif kind is int:
        made = DeclaredIntRange(**ranged)
    elif kind is float:
        made = DeclaredFloatRange(**ranged)
    else:  # str, a path in the share: the model and the share's rules check it
        return click.STRING
    made.parameter = name  # type: ignore[attr-defined]
    return made


def _help(name: str, field: FieldInfo) -> str:
    default = field.default
    if name in params.SETTING_OF:
        source = f"PIPELINE_{params.SETTING_OF[name].upper()}, else {default}"
    else:
        source = "none" if default is None else str(default)
    return f"{field.description or name}; default: {source}."


def option(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The ``pipeline submit`` option of parameter ``name`` (params.option_names)."""
    field = params.Parameters.model_fields[name]
    names = params.option_names(name)
    kind = param_type(name)
    if kind is None:
        flag = names[0].removeprefix("--")
        return click.option(f"--{flag}/--no-{flag}", name, default=None, help=_help(name, field))
    return click.option(*names, name, type=kind, default=None, help=_help(name, field))


def parameter_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate ``command`` with one option per job parameter, listed in declared order."""
    for name in reversed(params.NAMES):
        command = option(name)(command)
    return command
