"""The runtime's K/V memory: storage (buffers and in-place bindings, storage.py) kept apart
from policy, in two kinds chosen by the manifest's ``memory``:

- view slots (view_slots.py): position-free cross-attention K/V, one slot per view;
  sliding window with pinned views; exact removal of any view by moving the last slot into
  its hole; a pending non-keyframe view used by the next render only.
- token window (token_window.py): causal self-attention K/V at absolute positions; the
  oldest unpinned frame is evicted; pinned (scale) frames never are; tokens of evicted
  frames may be retained; only the newest frame can be rolled back.

Both answer the same few calls (``plan_*`` then write then ``commit``, ``clear``, ``len``,
``reserved_bytes``); callers never edit their tables directly.
"""

from viewrt.contract.family import TOKEN_WINDOW, VIEW_SLOTS
from viewrt.runtime.kv.token_window import TokenWindow
from viewrt.runtime.kv.view_slots import ViewSlots

MEMORY = {VIEW_SLOTS: ViewSlots, TOKEN_WINDOW: TokenWindow}  # memory kind -> its class

__all__ = ["MEMORY", "TokenWindow", "ViewSlots"]
