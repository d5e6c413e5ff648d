"""Token window: the memory kind of causal self-attention K/V (a streaming model that keeps
a window of past frames, GCTStream-style).

Rules (``window`` unpinned frames, the first ``pinned`` frames pinned):

- Frames are appended at absolute positions: the n-th frame committed since the last reset
  has position n, for ever. Its K/V were computed at that position (rotary embeddings are
  applied before caching), so where its tokens sit in the buffer changes nothing: a slot
  move is exact, and nothing ever changes a frame's position. An append whose position
  would reach ``max_positions`` (the model's largest frame index) is refused.
- At most ``pinned + window`` frames are kept in full. Appending one more evicts the oldest
  unpinned frame (the window counts the new frame). The first ``pinned`` frames committed
  since reset (scale frames) are never evicted; with ``window`` 0 and every slot pinned, an
  append is refused.
- An evicted frame keeps its first ``retain_tokens`` tokens (a family's special tokens) in a
  second, append-only region, for ever (until reset), read by the reader's ``retained_*``
  inputs. Without retained tokens (0), an evicted frame is gone.
- Removal: a past frame cannot be removed, since every later frame was computed from it;
  only the newest committed frame can be rolled back (once), which restores exactly what
  its append evicted. A non-keyframe is written to the free slot, read by its own step
  and never committed (attend, then roll back).
- Two counters: ``frames_seen`` (every step, non-keyframes included) and ``next_position``
  (frames committed: the position the next keyframe gets).

The policy (:class:`WindowPolicy`) is pure Python, tested against a plain model of these
rules (tests/runtime/test_token_window.py); :class:`TokenWindow` carries its decisions out on
the storage (storage.py) with one slot copy per eviction (two with retained tokens).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from viewrt.contract.family import TOKEN_WINDOW
from viewrt.contract.manifest import Manifest
from viewrt.errors import ViewrtError
from viewrt.runtime.backends.base import Backend, Buffer
from viewrt.runtime.kv.storage import KVStorage


@dataclass(frozen=True)
class Frame:
    """One cached frame: its absolute position (also its id) and whether it is pinned."""

    position: int
    pinned: bool


@dataclass
class AppendPlan:
    """What :meth:`WindowPolicy.plan_append` decided: the writer writes the frame at
    ``slot`` (the first free slot); on commit, ``evict`` (a slot index) is evicted and the
    new frame moves into its slot."""

    slot: int
    frame: Frame
    keyframe: bool = True
    evict: int | None = None


@dataclass
class WindowTable:
    """Which frame is in which full slot, and which evicted frames' tokens are retained
    (in region order). Changed only by :class:`WindowPolicy` and :class:`TokenWindow`."""

    full: list[Frame] = field(default_factory=list)
    retained: list[int] = field(default_factory=list)  # positions

    def positions(self) -> list[int]:
        return [f.position for f in self.full]


class WindowPolicy:
    """Window eviction with pinned frames at absolute positions.

    Args:
        window: unpinned frames kept in full, the new one included (>= 0).
        pinned: the first ``pinned`` frames committed since reset are never evicted (>= 0).
        max_positions: frames a stream may commit before reset (the model's position limit).
        capacity: full slots the memory has (``pinned + window`` must fit).
    Raises: ViewrtError for a value out of range.
    """

    def __init__(self, window: int, pinned: int, max_positions: int, capacity: int):
        for name, v in (
            ("window", window),
            ("pinned", pinned),
            ("max_positions", max_positions),
            ("capacity", capacity),
        ):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ViewrtError(f"{name} must be an integer >= 0, got {v!r}")
        if pinned + window < 1:
            raise ViewrtError("pinned + window must be at least 1 frame")
        if pinned + window > capacity:
            raise ViewrtError(
                f"pinned + window = {pinned + window} exceeds the cache capacity of {capacity} frames"
            )
        self.window, self.pinned, self.max_positions = window, pinned, max_positions
        self.capacity = pinned + window
        self.next_position = 0
        self.frames_seen = 0

    def plan_append(self, table: WindowTable, keyframe: bool = True) -> AppendPlan:
        """Where the next frame goes and what its commit evicts, changing nothing.

        Raises: ViewrtError when its position reaches ``max_positions``, or the window is
            full of pinned frames.
        """
        pos = self.next_position
        if pos >= self.max_positions:
            raise ViewrtError(
                f"frame position {pos} is beyond the model's {self.max_positions} positions; "
                "reset the stream"
            )
        pinned = keyframe and pos < self.pinned
        frame = Frame(pos, pinned)
        slot = len(table.full)
        if not keyframe or slot < self.capacity:
            return AppendPlan(slot, frame, keyframe)
        unpinned = [i for i, f in enumerate(table.full) if not f.pinned]
        if not unpinned:
            raise ViewrtError(
                f"cache full: all {slot} cached frames are pinned and the window is 0; "
                "nothing to evict"
            )
        oldest = min(unpinned, key=lambda i: table.full[i].position)
        return AppendPlan(slot, frame, keyframe, evict=oldest)

    def stepped(self, plan: AppendPlan) -> None:
        """Count a step that ran (a committed keyframe advances the position too)."""
        self.frames_seen += 1
        if plan.keyframe:
            self.next_position += 1

    def rolled_back(self) -> None:
        self.next_position -= 1

    def reset(self) -> None:
        self.next_position = 0
        self.frames_seen = 0


@dataclass
class _Undo:
    """How to undo the newest commit: its frame's slot, the frame it evicted (kept in the
    limbo slot), and whether that frame's tokens went to the retained region."""

    slot: int
    evicted: Frame | None
    retained: bool


class TokenWindow:
    """The token-window memory: full frame slots (``pinned + window``, plus one to write
    into and one limbo slot that keeps the last evicted frame for a rollback) and, where
    the family retains tokens of evicted frames, an append-only retained region.

    Args:
        backend: an active backend (owns the memory).
        manifest: a manifest whose family keeps a token window.
        window, pinned: see :class:`WindowPolicy` (capacity: the manifest's).
    Raises: ViewrtError for a manifest of another memory kind or a bad window.
    """

    kind = TOKEN_WINDOW

    def __init__(self, backend: Backend, manifest: Manifest, window: int, pinned: int = 0):
        if manifest.memory != TOKEN_WINDOW:
            raise ViewrtError(
                f"{manifest.dir}: family {manifest.family!r} keeps its K/V as "
                f"{manifest.memory!r}, not as a token window"
            )
        geo = manifest.cache
        self.geo = geo
        self.policy = WindowPolicy(window, pinned, geo.max_positions, geo.capacity)
        self.table = WindowTable()
        self.limbo = self.policy.capacity + 1
        self.full = KVStorage(backend, manifest, self.policy.capacity + 2)
        self.retain = geo.retain_tokens
        self.retained = (
            KVStorage(backend, manifest, geo.max_positions, geo.retain_tokens, role="retained")
            if self.retain
            else None
        )
        self._undo: _Undo | None = None

    def __len__(self) -> int:
        return len(self.table.full)

    @property
    def reserved_bytes(self) -> int:
        return self.full.reserved_bytes + (self.retained.reserved_bytes if self.retained else 0)

    def plan_append(self, keyframe: bool = True) -> AppendPlan:
        """Where the next frame goes (changes nothing). Raises ViewrtError."""
        return self.policy.plan_append(self.table, keyframe)

    def slot_outputs(self, plan: AppendPlan) -> dict[str, Buffer]:
        """Writer output bindings for the planned frame (the free slot)."""
        return self.full.slot_outputs(plan.slot)

    def read_inputs(self, min_retained: int = 0) -> dict[str, Buffer]:
        """Reader bindings: the full frames' prefix (``past_*``) and, where the family
        retains tokens, the retained prefix (``retained_*``), in place.

        Args:
            min_retained: bind at least this many retained entries (a reader that masks
                the unused ones by a count input, so its retained inputs are never empty).
        """
        out = self.full.prefix_inputs(len(self.table.full) * self.full.T)
        if self.retained is not None:
            n = max(len(self.table.retained), min_retained)
            out.update(self.retained.prefix_inputs(n * self.retain))
        return out

    def commit(self, plan: AppendPlan) -> None:
        """Keep the frame the writer put at ``plan.slot`` (a keyframe), evicting what the
        plan says; a non-keyframe is only counted (its K/V are dropped)."""
        if plan.slot != len(self.table.full):
            raise RuntimeError("a plan must write the first free slot")
        self.policy.stepped(plan)
        if not plan.keyframe:
            return
        if plan.evict is None:
            self.table.full.append(plan.frame)
            self._undo = _Undo(plan.slot, None, False)
            return
        v = plan.evict
        victim = self.table.full[v]
        kept = self.retained is not None
        if kept:  # its special tokens stay, appended to the retained region
            self.retained.copy_tokens(
                self.full, len(self.table.retained) * self.retain, v, self.retain
            )
            self.table.retained.append(victim.position)
        self.full.move(self.limbo, v)  # kept until the next commit, for a rollback
        self.full.move(v, plan.slot)  # the new frame takes the victim's slot
        self.table.full[v] = plan.frame
        self._undo = _Undo(v, victim, kept)

    def remove(self, position: int) -> None:
        """Roll back the newest committed frame; any other frame is refused.

        Raises: ViewrtError for a past frame (later frames were computed from it), a
            frame not cached, or a second rollback.
        """
        newest = self.policy.next_position - 1
        if position != newest or self._undo is None:
            why = (
                "later frames were computed from it; only the newest frame can be rolled back"
                if 0 <= position < newest
                else f"it is not the newest cached frame (the next frame gets position {newest + 1})"
            )
            if position == newest:  # nothing committed since the last rollback or reset
                why = (
                    "one rollback per added frame: a frame was rolled back since it was added, "
                    "or the stream was reset"
                )
            raise ViewrtError(f"cannot remove frame {position}: {why}")
        u, self._undo = self._undo, None
        if u.evicted is None:
            self.table.full.pop()
        else:
            self.full.move(u.slot, self.limbo)  # the evicted frame back in its slot
            self.table.full[u.slot] = u.evicted
            if u.retained:
                self.table.retained.pop()
        self.policy.rolled_back()

    def clear(self) -> None:
        """Forget every frame and restart positions (buffers are kept)."""
        self.table = WindowTable()
        self.policy.reset()
        self._undo = None

    def info(self) -> dict:
        return {
            "memory": self.kind,
            "frames_cached": self.table.positions(),
            "pinned_positions": [f.position for f in self.table.full if f.pinned],
            "retained_positions": list(self.table.retained),
            "next_position": self.policy.next_position,
            "frames_seen": self.policy.frames_seen,
            "window": self.policy.window,
            "pinned": self.policy.pinned,
            "bytes_reserved": self.reserved_bytes,
        }
