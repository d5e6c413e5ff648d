"""View slots: the memory kind of position-free cross-attention K/V (Efficient-LVSM).

The policy (:class:`SlotTable`, :class:`CachePolicy`) decides which slot a new view is
written to, which view it evicts and what the next render reads. It is pure Python (no
buffers, no backend), tested on its own against a plain model of these rules
(tests/runtime/test_policy.py). :class:`ViewSlots` carries its decisions out on the
storage (storage.py).

Rules (``capacity`` views, optional ``window`` with ``pinned`` views):

- Keyframes are cached. Without a window at most ``capacity`` are; with one, at most
  ``pinned + window``, and adding one more evicts the oldest unpinned keyframe. The first
  ``pinned`` keyframes added since the last reset are never evicted.
- A non-keyframe view (``keyframe=False``) takes part in the next render, whatever adds
  or removes come before that render, and is then dropped. A second non-keyframe view
  added before a render replaces the first.
- Every render reads at most ``capacity`` views (keyframes + the pending non-keyframe), so
  an add that would break that is refused.
- A new view is always written to the first free physical slot (the slot table has
  ``capacity + 1`` physical slots), and only committed once written: a failed write
  leaves the table exactly as it was. Dropping a view moves the last slot into its hole,
  so the views a render reads are always the contiguous prefix. This is exact because
  cross-attention has no positional terms: a view's K/V mean the same in any slot.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from viewrt.contract.family import VIEW_SLOTS
from viewrt.contract.manifest import Manifest
from viewrt.errors import ViewrtError
from viewrt.runtime.backends.base import Backend, Buffer
from viewrt.runtime.kv.storage import KVStorage


@dataclass
class Slot:
    """One cached view. ``age``: insertion counter (smaller is older)."""

    view_id: int
    pinned: bool
    age: int
    keyframe: bool = True


@dataclass
class AddPlan:
    """What :meth:`CachePolicy.plan_add` decided: write the view at ``slot`` (the first free
    physical slot), then drop the views in ``drop`` (view ids)."""

    slot: int
    entry: Slot
    drop: list[int] = field(default_factory=list)


class SlotTable:
    """Which view is in which physical slot; the only code that changes it.

    Slots ``[0, len)`` are occupied. :meth:`remove` returns the ``(dst, src)`` slot move
    the storage must copy (the last slot into the hole), or None when nothing moves.
    """

    def __init__(self, physical: int):
        self.physical = physical
        self.slots: list[Slot] = []

    def __len__(self) -> int:
        return len(self.slots)

    def index(self, view_id: int) -> int | None:
        return next((i for i, s in enumerate(self.slots) if s.view_id == view_id), None)

    @property
    def keyframes(self) -> list[Slot]:
        return [s for s in self.slots if s.keyframe]

    @property
    def pending(self) -> Slot | None:
        return next((s for s in self.slots if not s.keyframe), None)

    def append(self, entry: Slot) -> int:
        if len(self.slots) >= self.physical:
            raise RuntimeError("slot table overflow")  # the policy never lets this happen
        self.slots.append(entry)
        return len(self.slots) - 1

    def remove(self, view_id: int) -> tuple[int, int] | None:
        i = self.index(view_id)
        if i is None:
            raise KeyError(view_id)
        last = len(self.slots) - 1
        if i != last:
            self.slots[i] = self.slots[last]
        self.slots.pop()
        return (i, last) if i != last else None

    def clear(self) -> None:
        self.slots.clear()


class CachePolicy:
    """Sliding window with pinned views, and non-keyframe views.

    Args:
        capacity: most views one render reads (>= 1).
        window: None (no eviction: a full cache is an error) or the number of unpinned
            keyframes kept (>= 1).
        pinned: the first ``pinned`` keyframes added are never evicted (>= 0).
    Raises: ViewrtError when ``pinned + window`` exceeds ``capacity`` or a value is out of
        range.
    """

    def __init__(self, capacity: int, window: int | None = None, pinned: int = 0):
        for name, v in (("capacity", capacity), ("pinned", pinned)) + (
            (("window", window),) if window is not None else ()
        ):
            if isinstance(v, bool) or not isinstance(v, int):
                raise ViewrtError(f"{name} must be an integer, got {type(v).__name__} {v!r}")
        if capacity < 1 or pinned < 0 or (window is not None and window < 1):
            raise ViewrtError(
                f"need capacity >= 1, pinned >= 0 and window >= 1, got capacity={capacity}, pinned={pinned}, window={window}"
            )
        if pinned > capacity:
            raise ViewrtError(f"pinned = {pinned} exceeds the cache capacity of {capacity} views")
        if window is not None and pinned + window > capacity:
            raise ViewrtError(
                f"pinned + window = {pinned + window} exceeds the cache capacity of {capacity} views"
            )
        self.capacity, self.window, self.pinned = capacity, window, pinned
        self.physical = capacity + 1  # one free slot to write into before committing
        self._ids = 0
        self._age = 0
        self._added = 0  # keyframes added since reset (for pinning)

    @property
    def keyframe_limit(self) -> int:
        return self.capacity if self.window is None else self.pinned + self.window

    def plan_add(self, table: SlotTable, keyframe: bool = True) -> AddPlan:
        """Decide where a new view goes and what it evicts, changing nothing.

        Raises: ViewrtError when the view cannot be added (full cache without a window,
            every cached view pinned, no room for the pending non-keyframe view).
        """
        keys, pending = table.keyframes, table.pending
        c, p = len(keys), int(pending is not None)
        drop: list[int] = []
        if not keyframe:
            if pending is not None:
                drop.append(pending.view_id)  # a second non-keyframe replaces the first
            elif c + 1 > self.capacity:
                raise ViewrtError(
                    f"cache full ({c} of {self.capacity} views): no room for a non-keyframe view in the next "
                    "render; remove a view, or open with a window smaller than the capacity"
                )
        elif c < self.keyframe_limit:
            if c + 1 + p > self.capacity:
                raise ViewrtError(
                    f"cache full ({c} of {self.capacity} views plus a pending non-keyframe view that the next "
                    "render uses); render or remove a view first"
                )
        elif self.window is None:
            raise ViewrtError(
                f"cache full ({c} of {self.capacity} views); remove a view, reset, or open with a window"
            )
        else:
            unpinned = [s for s in keys if not s.pinned]
            if not unpinned:
                raise ViewrtError(
                    f"cache full and all {c} cached views are pinned; nothing to evict"
                )
            drop.append(min(unpinned, key=lambda s: s.age).view_id)
        entry = Slot(
            self._ids,
            pinned=keyframe and self._added < self.pinned,
            age=self._age,
            keyframe=keyframe,
        )
        return AddPlan(len(table), entry, drop)

    def committed(self, plan: AddPlan) -> None:
        """Count a plan that was carried out (ids, ages and pinning advance only then)."""
        self._ids += 1
        self._age += 1
        if plan.entry.keyframe:
            self._added += 1

    def after_render(self, table: SlotTable) -> list[int]:
        """View ids to drop once a render has used them (the pending non-keyframe)."""
        pending = table.pending
        return [pending.view_id] if pending is not None else []

    def reset(self) -> None:
        self._added = 0


class ViewSlots:
    """The view-slot memory: the storage of ``capacity + 1`` view slots and its slot table.
    Every change to the table goes through here, with the one copy it needs.

    Args:
        backend: an active backend (owns the memory).
        manifest: a manifest whose family keeps view slots.
        policy: the cache policy (capacity, window, pinned).
    Raises: ViewrtError when the manifest's memory kind is not view slots.
    """

    kind = VIEW_SLOTS

    def __init__(self, backend: Backend, manifest: Manifest, policy: CachePolicy):
        if manifest.memory != VIEW_SLOTS:
            raise ViewrtError(
                f"{manifest.dir}: family {manifest.family!r} keeps its K/V as "
                f"{manifest.memory!r}, not as view slots"
            )
        self.policy = policy
        self.storage = KVStorage(backend, manifest, policy.physical)
        self.T = self.storage.T
        self.bytes_per_view = self.storage.bytes_per_entry  # in the backend's cache dtype
        self.table = SlotTable(policy.physical)

    def __len__(self) -> int:
        return len(self.table)

    @property
    def slots(self) -> list[Slot]:
        """The slot table (read it; change it only through this class)."""
        return list(self.table.slots)

    @property
    def reserved_bytes(self) -> int:
        return self.storage.reserved_bytes

    @property
    def buffers(self) -> list[Buffer]:
        """The storage's K/V buffers, one per writer output (read them; never rebind)."""
        return self.storage.buffers

    def plan_add(self, keyframe: bool = True) -> AddPlan:
        """Where a new view goes and what it evicts (changes nothing). Raises ViewrtError."""
        return self.policy.plan_add(self.table, keyframe)

    def slot_outputs(self, slot: int) -> dict[str, Buffer]:
        """Encoder output bindings that land in slot ``slot``."""
        return self.storage.slot_outputs(slot)

    def prefix_inputs(self, n_views: int) -> dict[str, Buffer]:
        """Decoder past bindings: the first ``n_views`` slots, in place."""
        return self.storage.prefix_inputs(n_views * self.T)

    def check_finite(self, slot: int) -> None:
        self.storage.check_finite(slot)

    def drop(self, view_id: int) -> None:
        """Forget a view; the last slot moves into its place."""
        move = self.table.remove(view_id)
        if move is not None:
            self.storage.move(*move)

    def commit(self, plan: AddPlan) -> None:
        """Record the view written at ``plan.slot``, drop what the plan evicts, and let the
        policy count it."""
        if plan.slot != len(self.table):
            raise RuntimeError("a plan must write the first free slot")
        self.table.append(plan.entry)
        for view_id in plan.drop:
            self.drop(view_id)
        self.policy.committed(plan)

    def after_render(self) -> None:
        """Drop what a render used up (the pending non-keyframe view)."""
        for view_id in self.policy.after_render(self.table):
            self.drop(view_id)

    def clear(self) -> None:
        """Forget every view (buffers are kept) and restart pinning."""
        self.table.clear()
        self.policy.reset()
