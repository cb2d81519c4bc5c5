"""The one error style of every command group: user errors end as ``error: <message>`` and exit code 2.

Every group builds its Typer app with :func:`command_group`; each command it declares is wrapped by
:func:`report_user_errors`, so a :class:`~editkit.errors.UserError` raised anywhere below a command is reported in
one line, while any other exception (a bug) keeps its traceback.
"""
from __future__ import annotations

import functools
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import typer

from editkit.errors import EXIT_USER_ERROR, UserError


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


class CommandGroup(typer.Typer):
    """A Typer app whose commands report user errors in one line."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        register = super().command(*args, **kwargs)

        def decorator(function: Callable[..., Any]) -> Callable[..., Any]:
            register(report_user_errors(function))
            return function

        return decorator

    def callback(self, *args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        register = super().callback(*args, **kwargs)

        def decorator(function: Callable[..., Any]) -> Callable[..., Any]:
            register(report_user_errors(function))
            return function

        return decorator


def command_group(**settings: Any) -> CommandGroup:
    settings.setdefault("no_args_is_help", True)
    settings.setdefault("pretty_exceptions_show_locals", False)
    return CommandGroup(**settings)
