"""The product layer's user-mistake exception."""


class DataError(ValueError):
    """A user mistake in the data or its description (a missing file, a malformed record, a missing
    field, a bad --fields spec). `str()` is one line naming the file / line / field; the CLI prints it as
    `prism: error: <message>` and exits 2 without a traceback."""
