"""The one error style of every command group: user errors end as ``error: <message>`` and exit code 2.

Every group builds its Typer app with :func:`command_group`; each command it declares is wrapped by
:func:`report_user_errors`, so a :class:`~editkit.errors.UserError` raised anywhere below a command is reported in
one line, while any other exception (a bug) keeps its traceback.

A group can also take sub-groups by name, ``app.add_lazy_typer("package.cli:app", name="group")``: the module is
imported only when the group runs or ``--help`` lists it, so the umbrella CLI never imports the packages it lists.
"""
from __future__ import annotations

import functools
from contextlib import contextmanager
from typing import Any, Callable, ClassVar, Iterator, Optional

import click
import typer
from typer.core import TyperGroup

from editkit.errors import EXIT_USER_ERROR, UserError
from editkit.registry import import_dotted


@contextmanager
def user_errors(*also: type[BaseException]) -> Iterator[None]:
    """Report :class:`UserError` (and the exception types in ``also``) as one line on stderr, exit code 2."""
    try:
        yield
    except (UserError, *also) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(EXIT_USER_ERROR) from None


def report_user_errors(function: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator form of :func:`user_errors` (keeps the signature Typer reads the options from)."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with user_errors():
            return function(*args, **kwargs)

    return wrapper


class LazyTyperGroup(TyperGroup):
    """A group whose sub-groups in :attr:`lazy_groups` (name -> ``"package.module:app"``) are imported on first use.

    They are listed first, in the order added, then the group's own commands."""

    lazy_groups: ClassVar[dict[str, str]] = {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*self.lazy_groups, *(name for name in super().list_commands(ctx) if name not in self.lazy_groups)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> Optional[click.Command]:
        if cmd_name in self.lazy_groups and cmd_name not in self.commands:
            group = typer.main.get_group(import_dotted(self.lazy_groups[cmd_name], "command group"))
            group.name = cmd_name
            self.commands[cmd_name] = group
        elif cmd_name not in self.commands:  # a typo: load every group, so the error suggests from all names
            for name in self.lazy_groups:
                self.get_command(ctx, name)
        return super().get_command(ctx, cmd_name)


class CommandGroup(typer.Typer):
    """A Typer app whose commands report user errors in one line, and whose sub-groups may be named lazily."""

    def __init__(self, **settings: Any):
        self._lazy_groups: dict[str, str] = {}
        settings.setdefault("cls", type("LazyGroups", (LazyTyperGroup,), {"lazy_groups": self._lazy_groups}))
        super().__init__(**settings)

    def add_lazy_typer(self, target: str, *, name: str) -> None:
        """Sub-group ``name`` is the Typer app at ``target`` (``"package.module:app"``), imported on first use."""
        self._lazy_groups[name] = target
        if not self.registered_callback and not self.info.callback:
            self.info.callback = _no_options  # a group, even while it declares one command of its own

    def command(self, *args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return _reporting(super().command(*args, **kwargs))

    def callback(self, *args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return _reporting(super().callback(*args, **kwargs))


def _reporting(register: Callable[[Callable[..., Any]], Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A Typer registration decorator that registers the function wrapped by :func:`report_user_errors`."""

    def decorator(function: Callable[..., Any]) -> Callable[..., Any]:
        register(report_user_errors(function))
        return function

    return decorator


def _no_options() -> None:
    """A group's callback that takes no options (Typer builds a group, not a single command, when there is one)."""


def command_group(**settings: Any) -> CommandGroup:
    settings.setdefault("no_args_is_help", True)
    settings.setdefault("pretty_exceptions_show_locals", False)
    return CommandGroup(**settings)
