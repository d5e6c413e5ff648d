"""The token-window memory kind (runtime/kv/token_window.py): a hypothesis state machine
drives it on real host memory (the runtime's HostMemory) with a toy causal family declared
in this file (a contract subclass + one FAMILIES row, as a new family adds itself), and
checks every state against a plain model of the documented rules: which frames are read in
full, which frames' retained tokens are read, positions, refusals, and that a refused
operation changes nothing.

The writer is simulated: each frame's K/V tokens hold ``position * 100 + token`` (negated
for V), so what the reader's bindings see names exactly which frame and token each row is.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import viewrt.contract.names as N
from viewrt.contract.families import FAMILIES
from viewrt.contract.family import (
    TOKEN_WINDOW,
    CacheGeometry,
    FamilyContract,
    GraphDecl,
    kv_tensors,
)
from viewrt.contract.manifest import Manifest
from viewrt.contract.tensors import GraphSignature, TensorInfo
from viewrt.errors import ViewrtError
from viewrt.runtime.backends.base import Backend
from viewrt.runtime.backends.memory import HostMemory
from viewrt.runtime.kv.token_window import TokenWindow

T, R, H, DH, L = 4, 2, 1, 2, 2  # tokens per frame, retained tokens, heads, head dim, layers
STEP = GraphDecl("step", "step.onnx", "a frame in, its K/V out, attending to the window")


class ToyStream(FamilyContract):
    """A causal family with a window of frames and two retained tokens per evicted frame."""

    name = "toy-stream"
    memory = TOKEN_WINDOW
    capacity_field = "max_frames"
    header_ints = {"max_frames": 1, "max_positions": 1, "retain": 0}
    graphs = (STEP,)

    def signatures(self, header, kv_dtype):
        past = (1, "past_tokens", H, DH)
        kept = (1, "retained_tokens", H, DH)
        return {
            "step": GraphSignature(
                inputs=(TensorInfo("frame", "float32", (1, T, 8)),)
                + kv_tensors("past", L, kv_dtype, past)
                + kv_tensors("retained", L, kv_dtype, kept),
                outputs=kv_tensors("present", L, kv_dtype, (1, T, H, DH)),
            )
        }

    def cache(self, header):
        return CacheGeometry(
            memory=TOKEN_WINDOW, entry="frame", tokens_per_entry=T,
            capacity=header["max_frames"], n_layers=L, n_heads=H, head_dim=DH,
            writer="step", reader="step", dim="past_tokens",
            retain_tokens=header["retain"], max_positions=header["max_positions"],
        )  # fmt: skip

    def dim_limits(self, header):
        return {"retained_tokens": (0, header["max_positions"] * header["retain"])}


class HostOnly(Backend):
    """Memory only (the runtime's HostMemory): the token window needs no graph to run."""

    name = "host-memory"

    def activate(self):
        self.memory = HostMemory()

    def deactivate(self):
        self.memory = None


@pytest.fixture(autouse=True)
def _toy_family(monkeypatch):
    monkeypatch.setitem(FAMILIES, ToyStream.name, ToyStream())


def _manifest(max_frames=6, max_positions=12, retain=R) -> Manifest:
    header = {"max_frames": max_frames, "max_positions": max_positions, "retain": retain}
    sig = ToyStream().signatures(header, "float32")["step"]
    m = Manifest(
        family="toy-stream", preset="toy", config={}, precision="fp32", kv_dtype="float32",
        opset=18, header=header, graphs={"step": sig.graph_info("step.onnx")},
    )  # fmt: skip
    m.check_bounds()
    return m


def _write(mem: TokenWindow, plan) -> None:
    """What a step graph would write for this frame: tokens name (position, token)."""
    tok = plan.frame.position * 100 + np.arange(T, dtype=np.float32)
    for name, buf in mem.slot_outputs(plan).items():
        sign = -1.0 if N.parse_kv_name(name)[1] == "value" else 1.0
        buf.host[0] = sign * tok[:, None, None]


def _read(mem: TokenWindow) -> tuple[list[int], list[int]]:
    """(sorted token codes the past_* inputs read, those the retained_* inputs read),
    checked identical across layers and between K and V."""
    got = {}
    for name, buf in mem.read_inputs().items():
        role, kind, _ = N.parse_kv_name(name)
        codes = sorted((buf.host[0, :, 0, 0] * (-1 if kind == "value" else 1)).tolist())
        assert got.setdefault(role, codes) == codes, name
    return got.get("past", []), got.get("retained", [])


class Model:
    """The rules, plainly: frames in full oldest first, retained positions, counters."""

    def __init__(self, window, pinned, max_positions):
        self.window, self.pinned, self.maxp = window, pinned, max_positions
        self.full: list[tuple[int, bool]] = []  # (position, pinned)
        self.retained: list[int] = []
        self.next = 0
        self.undo = None

    def append(self, keyframe: bool) -> bool:
        if self.next >= self.maxp:
            return False
        if not keyframe:
            return True
        evicted = None
        if len(self.full) == self.pinned + self.window:
            unpinned = [f for f in self.full if not f[1]]
            if not unpinned:
                return False
            evicted = min(unpinned)
            self.full.remove(evicted)
            self.retained.append(evicted[0])
        self.full.append((self.next, self.next < self.pinned))
        self.undo = evicted
        self.next += 1
        return True

    def rollback(self, position: int) -> bool:
        if position != self.next - 1 or self.undo is False:
            return False
        self.full = [f for f in self.full if f[0] != position]
        if self.undo is not None:
            self.full.append(self.undo)
            self.retained.pop()
        self.undo = False
        self.next -= 1
        return True


class WindowMachine(RuleBasedStateMachine):
    @initialize(window=st.integers(0, 3), pinned=st.integers(0, 2), maxp=st.integers(1, 12))
    def setup(self, window, pinned, maxp):
        if pinned + window < 1:
            window = 1
        self.backend = HostOnly(_manifest(max_frames=6, max_positions=maxp), "cpu")
        self.backend.__enter__()
        self.mem = TokenWindow(self.backend, self.backend.manifest, window, pinned)
        self.model = Model(window, pinned, maxp)
        self.model.undo = False

    def _same_after_refusal(self, fn):
        before = (_read(self.mem), self.mem.info())
        with pytest.raises(ViewrtError):
            fn()
        assert (_read(self.mem), self.mem.info()) == before

    @rule(keyframe=st.booleans())
    def append(self, keyframe):
        ok = self.model.append(keyframe)
        if not ok:
            self._same_after_refusal(lambda: self.mem.plan_append(keyframe))
            return
        plan = self.mem.plan_append(keyframe)
        _write(self.mem, plan)
        if not keyframe:  # attend, then roll back: the step reads the window plus itself
            past, _ = _read(self.mem)
            assert len(past) == len(self.model.full) * T
        self.mem.commit(plan)

    @rule(back=st.integers(0, 3))
    def remove(self, back):
        position = self.model.next - 1 - back
        if self.model.rollback(position):
            self.mem.remove(position)
        else:
            self._same_after_refusal(lambda: self.mem.remove(position))

    @rule()
    def reset(self):
        self.mem.clear()
        self.model.__init__(self.model.window, self.model.pinned, self.model.maxp)
        self.model.undo = False

    @invariant()
    def matches_the_rules(self):
        if not hasattr(self, "mem"):
            return
        past, kept = _read(self.mem)
        want_past = sorted(p * 100 + t for p, _ in self.model.full for t in range(T))
        want_kept = sorted(p * 100 + t for p in self.model.retained for t in range(R))
        assert past == want_past
        assert kept == want_kept
        info = self.mem.info()
        assert sorted(info["frames_cached"]) == sorted(p for p, _ in self.model.full)
        assert info["next_position"] == self.model.next
        assert sorted(info["pinned_positions"]) == sorted(p for p, pin in self.model.full if pin)

    def teardown(self):
        if hasattr(self, "backend"):
            self.backend.__exit__(None, None, None)


WindowMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
test_token_window_rules = WindowMachine.TestCase


def test_positions_survive_eviction_and_the_past_is_never_removed():
    be = HostOnly(_manifest(max_frames=4, max_positions=8), "cpu")
    with be:
        mem = TokenWindow(be, be.manifest, window=2, pinned=1)
        for _ in range(5):
            plan = mem.plan_append()
            _write(mem, plan)
            mem.commit(plan)
        # frame 0 pinned, window of 2: frames 3 and 4; 1 and 2 evicted with their tokens kept
        assert sorted(mem.info()["frames_cached"]) == [0, 3, 4]
        assert mem.info()["retained_positions"] == [1, 2]
        past, kept = _read(mem)
        assert past == sorted(p * 100 + t for p in (0, 3, 4) for t in range(T))
        with pytest.raises(ViewrtError, match="later frames were computed from it"):
            mem.remove(3)
        mem.remove(4)  # the newest rolls back, frame 2 comes back in full
        assert sorted(mem.info()["frames_cached"]) == [0, 2, 3]
        assert _read(mem)[1] == sorted(100 + t for t in range(R))


def test_wrong_memory_kind_is_refused(tiny_export):
    from viewrt.contract.manifest import load_manifest

    m = load_manifest(tiny_export[0])
    be = HostOnly(m, "cpu")
    with be, pytest.raises(ViewrtError, match="not as a token window"):
        TokenWindow(be, m, window=2)
