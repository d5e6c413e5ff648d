"""Scene data (being split by job; see the next commit)."""

from viewrt.data.synthetic import *  # noqa: F403
from viewrt.data.synthetic import __all__  # noqa: F401
