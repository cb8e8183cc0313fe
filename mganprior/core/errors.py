"""The one error type for bad user input: its message is a single line that says what to fix.

Library code names the *field* it checked (``threshold``, ``codes``); the command line maps a
field to its flag (``--threshold``) when it prints the error, so the library never spells flags.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input (files, settings, shapes). The CLI prints it as one line and exits 2.

    ``field``: the setting at fault, when the message starts with its name.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field

    def with_flag(self, flag: str) -> str:
        """The message with its leading field name replaced by ``flag``."""
        message = str(self)
        if self.field and message.startswith(self.field):
            return flag + message[len(self.field):]
        return message


def field_error(field: str, problem: str) -> InputError:
    """``InputError("{field} {problem}", field)``: the way every settings check reports."""
    return InputError(f"{field} {problem}", field=field)
