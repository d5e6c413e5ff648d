"""The one exception type of viewrt.

Every error a user can cause (bad path, bad shape or dtype, NaN input, full cache, a
checkpoint or manifest that does not match) is raised as :class:`ViewrtError` with a
message that names the thing and says what was expected and what came. The CLI turns it
into one line on stderr and a non-zero exit.
"""


class ViewrtError(Exception):
    """A problem the caller can fix; the message is meant for the user."""
