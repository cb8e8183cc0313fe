"""The one error type for bad user input: its message is a single line that says what to fix."""


class InputError(ValueError):
    """Raised for bad input (files, flags, shapes). The CLI prints it as one line and exits 2."""
