"""Options dataclasses: the fields a method or a task adds to a run, with their help and allowed values.

A field is declared once with `option(default, help, ...)`; `describe` reads it back as an
`OptionInfo`, from which the CLI builds its flags, the widget its controls and a test checks the
tables of docs/engine.md. No torch and no Qt here, so that `--help` stays light.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field, fields
from functools import cache


def option(default, help: str, *, choices=None, minimum=None, maximum=None, above=None, below=None):
    """A field of an options dataclass.

    help: one line for `--help`, the widget's tooltip and docs/engine.md. choices: the allowed
    values. minimum and maximum (inclusive), above and below (exclusive): the allowed range of a number.
    """
    meta = {"help": help, "choices": None if choices is None else tuple(choices), "minimum": minimum,
            "maximum": maximum, "above": above, "below": below}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class OptionInfo:
    """One option as the CLI, the widget and the docs show it."""

    name: str
    type: type  # bool, int, float or str
    optional: bool  # None is allowed (it stands for a default chosen at run time)
    default: object
    help: str
    choices: tuple | None
    minimum: float | None
    maximum: float | None
    above: float | None
    below: float | None

    @property
    def default_text(self) -> str:
        """The default as --help, the widget and the docs show it (floats in %g form)."""
        return f"{self.default:g}" if isinstance(self.default, float) else str(self.default)

    @property
    def allowed_text(self) -> str:
        """The allowed values: the choices, or the range of a number ("" when any value is allowed)."""
        if self.choices is not None:
            return ", ".join(repr(c) if isinstance(c, str) else str(c) for c in self.choices)
        bounds = [(self.minimum, "≥"), (self.maximum, "≤"), (self.above, ">"), (self.below, "<")]
        return ", ".join(f"{sign} {bound:g}" for bound, sign in bounds if bound is not None)


@dataclass
class Options:
    """Base of the options dataclasses: `validate` checks every field against its choices and range."""

    def validate(self) -> None:
        for info in describe(type(self)):
            value = getattr(self, info.name)
            if info.choices is not None and value not in info.choices:
                raise ValueError(f"{info.name} must be one of {info.choices}, got {value!r}")
            if value is None or isinstance(value, bool | str):
                continue
            if info.minimum is not None and not value >= info.minimum:
                raise ValueError(f"{info.name} must be at least {info.minimum}, got {value!r}")
            if info.maximum is not None and not value <= info.maximum:
                raise ValueError(f"{info.name} must be at most {info.maximum}, got {value!r}")
            if info.above is not None and not value > info.above:
                raise ValueError(f"{info.name} must be greater than {info.above}, got {value!r}")
            if info.below is not None and not value < info.below:
                raise ValueError(f"{info.name} must be less than {info.below}, got {value!r}")


@dataclass
class NoOptions(Options):
    """A task or method with no options of its own."""


@cache
def describe(cls: type[Options]) -> tuple[OptionInfo, ...]:
    """The fields of an options dataclass, in declaration order (inherited ones first)."""
    hints = typing.get_type_hints(cls)
    infos = []
    for f in fields(cls):
        hint = hints[f.name]
        args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        base = next(a for a in args if a is not type(None))
        infos.append(OptionInfo(name=f.name, type=base, optional=type(None) in args, default=f.default,
                                help=f.metadata["help"], choices=f.metadata["choices"],
                                minimum=f.metadata["minimum"], maximum=f.metadata["maximum"], above=f.metadata["above"],
                                below=f.metadata["below"]))
    return tuple(infos)


def build(cls: type[Options], given: dict) -> Options:
    """`cls` from the values in `given` that are its fields; None for a field that takes no None means its default
    (as `restarts=None` always did)."""
    return cls(**{info.name: given[info.name] for info in describe(cls)
                  if info.name in given and (given[info.name] is not None or info.optional)})


def names(cls: type[Options]) -> tuple[str, ...]:
    return tuple(info.name for info in describe(cls))
