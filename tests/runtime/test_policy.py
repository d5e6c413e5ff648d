"""The cache policy on its own (no backend, no tensors): a hypothesis state machine drives
CachePolicy + SlotTable, applying every slot move to a simulated physical store, against a
plain-Python model of the documented rules (runtime/kv/view_slots.py)."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from viewrt.errors import ViewrtError
from viewrt.runtime.kv.view_slots import CachePolicy, SlotTable


class Model:
    """The documented rules, written plainly: keyframes in insertion order with a pinned
    flag, and at most one pending non-keyframe view."""

    def __init__(self, capacity, window, pinned):
        self.capacity, self.window, self.pinned = capacity, window, pinned
        self.keys: list[tuple[int, bool]] = []  # (view id, pinned), oldest first
        self.pending: int | None = None
        self.added = 0

    def add(self, vid: int, keyframe: bool) -> bool:
        """Apply an add; False when the rules refuse it (nothing changes then)."""
        limit = self.capacity if self.window is None else self.pinned + self.window
        p = self.pending is not None
        if not keyframe:
            if not p and len(self.keys) + 1 > self.capacity:
                return False
            self.pending = vid  # replaces any earlier non-keyframe view
            return True
        if len(self.keys) < limit:
            if len(self.keys) + 1 + p > self.capacity:
                return False
        else:
            unpinned = [k for k in self.keys if not k[1]]
            if self.window is None or not unpinned:
                return False
            self.keys.remove(unpinned[0])  # the oldest unpinned keyframe
        self.keys.append((vid, self.added < self.pinned))
        self.added += 1
        return True

    def render_set(self) -> set[int]:
        return {k for k, _ in self.keys} | ({self.pending} if self.pending is not None else set())


class PolicyMachine(RuleBasedStateMachine):
    @initialize(
        capacity=st.integers(1, 6),
        window=st.one_of(st.none(), st.integers(1, 6)),
        pinned=st.integers(0, 3),
    )
    def setup(self, capacity, window, pinned):
        if pinned > capacity or (window is not None and pinned + window > capacity):
            with pytest.raises(ViewrtError, match="exceeds the cache capacity"):
                CachePolicy(capacity, window, pinned)
            window, pinned = (
                None,
                min(pinned, capacity),
            )  # the same machine continues with what is allowed
        self.policy = CachePolicy(capacity, window, pinned)
        self.table = SlotTable(self.policy.physical)
        self.store: list[int | None] = [
            None
        ] * self.policy.physical  # view id in each physical slot
        self.model = Model(capacity, window, pinned)
        self.next_id = 0

    def _drop(self, vid):
        move = self.table.remove(vid)
        if move is not None:
            dst, src = move
            self.store[dst] = self.store[src]  # the storage copies the last slot into the hole

    def _add(self, keyframe: bool):
        before = [(s.view_id, s.pinned, s.keyframe) for s in self.table.slots]
        try:
            plan = self.policy.plan_add(self.table, keyframe)
        except ViewrtError:
            assert not self.model.add(-1, keyframe), "the policy refused an add the rules allow"
            assert [
                (s.view_id, s.pinned, s.keyframe) for s in self.table.slots
            ] == before  # nothing changed
            return
        assert (
            plan.slot == len(self.table) < self.policy.physical
        )  # always the first free physical slot
        assert self.store[plan.slot] is None or plan.slot >= len(self.table)
        vid = plan.entry.view_id
        self.store[plan.slot] = vid  # the encoder writes the free slot ...
        self.table.append(plan.entry)  # ... and only then is it committed
        for victim in plan.drop:
            self._drop(victim)
        self.policy.committed(plan)
        assert self.model.add(vid, keyframe), "the policy allowed an add the rules refuse"

    @rule()
    def add_keyframe(self):
        self._add(True)

    @rule()
    def add_non_keyframe(self):
        self._add(False)

    @precondition(lambda self: self.model.keys)
    @rule(pick=st.integers(0, 100))
    def remove(self, pick):
        vid, _ = self.model.keys[pick % len(self.model.keys)]
        self._drop(vid)
        self.model.keys = [k for k in self.model.keys if k[0] != vid]

    @rule()
    def render(self):
        n = len(self.table)
        assert n <= self.policy.capacity  # a render never reads more than the capacity
        assert (
            set(self.store[:n]) == self.model.render_set()
        )  # the prefix is exactly what the rules say
        for vid in self.policy.after_render(self.table):
            self._drop(vid)
        self.model.pending = None

    @rule()
    def reset(self):
        self.table.clear()
        self.policy.reset()
        self.store = [None] * self.policy.physical
        self.model = Model(self.model.capacity, self.model.window, self.model.pinned)

    @invariant()
    def table_matches_store_and_model(self):
        if not hasattr(self, "table"):
            return
        n = len(self.table)
        assert [s.view_id for s in self.table.slots] == self.store[:n]
        assert {s.view_id for s in self.table.slots if s.keyframe} == {
            k for k, _ in self.model.keys
        }
        pend = self.table.pending
        assert (pend.view_id if pend else None) == self.model.pending
        assert {s.view_id for s in self.table.slots if s.pinned} == {
            k for k, p in self.model.keys if p
        }
        assert n <= self.policy.capacity


PolicyMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
test_policy_state_machine = PolicyMachine.TestCase


def test_non_keyframe_survives_a_later_keyframe_at_every_fill_level():
    """The issue's failing input, at every fill level: 2 keyframes, a non-keyframe N, a
    keyframe, render: N is in the render."""
    for capacity in range(2, 7):
        for before in range(0, capacity - 1):
            policy = CachePolicy(capacity)
            table = SlotTable(policy.physical)
            ids = []
            for keyframe in [True] * before + [False, True]:
                plan = policy.plan_add(table, keyframe)
                table.append(plan.entry)
                for v in plan.drop:
                    table.remove(v)
                policy.committed(plan)
                ids.append(plan.entry.view_id)
            n_id = ids[before]
            assert n_id in {s.view_id for s in table.slots}, (capacity, before)
            assert len(table) == before + 2 <= capacity


def test_second_non_keyframe_replaces_the_first():
    policy = CachePolicy(4)
    table = SlotTable(policy.physical)
    first = policy.plan_add(table, False)
    table.append(first.entry)
    policy.committed(first)
    second = policy.plan_add(table, False)
    assert second.drop == [first.entry.view_id]


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(capacity=0),
        dict(capacity=3, window=0),
        dict(capacity=3, pinned=-1),
        dict(capacity=3, window="2"),
        dict(capacity=2.5),
    ],
)
def test_bad_policy_arguments(kwargs):
    with pytest.raises(ViewrtError):
        CachePolicy(**kwargs)
