"""The KV cache: per-layer K and V buffers allocated once, and a slot table.

Each buffer is ``[1, max_views * T, heads, head_dim]`` on the backend's device, token axis
right after the batch axis, so slot ``s`` is the contiguous token run ``[s*T, (s+1)*T)``
and the valid views ``[0, n)`` are one contiguous prefix. The encoder's outputs are bound
to a slot (written in place); the decoder's past inputs are bound to the prefix (read in
place). Removing a view moves the last slot into the hole: exact, because cross-attention
has no positional terms.
"""

from __future__ import annotations

from dataclasses import dataclass

from viewrt.errors import ViewrtError
from viewrt.runtime.backends.base import Backend, Buffer
from viewrt.runtime.manifest import Manifest


@dataclass
class Slot:
    view_id: int
    pinned: bool
    age: int  # insertion counter: smaller is older


class KVCache:
    """Buffers and slot table; the policies (window, pinning, keyframes) live in the renderer.

    Args:
        backend: an active backend (owns the memory).
        manifest: gives layers, heads, head_dim, tokens per view, cache dtype, tensor names.
        max_views: capacity in views.
    """

    def __init__(self, backend: Backend, manifest: Manifest, max_views: int):
        self.backend, self.max_views, self.T = backend, max_views, manifest.tokens_per_view
        # Slot s starts s * slot_bytes into each buffer; backends that bind by address may
        # need every slot aligned (TensorRT: 256 bytes). Refuse before allocating anything.
        slot_bytes = self.T * manifest.n_heads * manifest.head_dim * manifest.kv_dtype.itemsize
        align = int(getattr(backend, "address_alignment", 1))
        if slot_bytes % align:
            raise ViewrtError(f"one view's K/V ({self.T} tokens x {manifest.n_heads} heads x {manifest.head_dim} x "
                              f"{manifest.kv_dtype.itemsize} bytes = {slot_bytes} bytes) is not a multiple of the "
                              f"{align}-byte address alignment the {backend.name} backend needs, so cache slots "
                              "cannot be bound in place; use a config whose per-view K/V size is a multiple of it")
        self.present, self.past = manifest.present_names, manifest.past_names
        shape = (1, max_views * self.T, manifest.n_heads, manifest.head_dim)  # [1, capacity, H, Dh]
        self.buffers: list[Buffer] = [backend.alloc(shape, manifest.kv_dtype) for _ in self.present]
        self.bytes_per_view = manifest.kv_bytes_per_view
        self.slots: list[Slot] = []

    def __len__(self) -> int:
        return len(self.slots)

    @property
    def reserved_bytes(self) -> int:
        return sum(b.nbytes for b in self.buffers)

    def slot_outputs(self, slot: int) -> dict[str, Buffer]:
        """Encoder output bindings that land in slot ``slot`` of every layer's K and V."""
        return {name: buf.tokens(slot * self.T, (slot + 1) * self.T) for name, buf in zip(self.present, self.buffers)}

    def prefix_inputs(self, n_views: int) -> dict[str, Buffer]:
        """Decoder past bindings: the first ``n_views`` slots of every buffer, in place."""
        return {name: buf.tokens(0, n_views * self.T) for name, buf in zip(self.past, self.buffers)}

    def move(self, dst: int, src: int) -> None:
        """Copy slot ``src`` onto slot ``dst`` in every buffer (one view's worth)."""
        for buf in self.buffers:
            self.backend.copy(buf.tokens(dst * self.T, (dst + 1) * self.T), buf.tokens(src * self.T, (src + 1) * self.T))

    def find(self, view_id: int) -> int | None:
        return next((i for i, s in enumerate(self.slots) if s.view_id == view_id), None)

    def remove_slot(self, slot: int) -> None:
        """Drop a slot: the last one moves into its place (no copy if it is the last)."""
        last = len(self.slots) - 1
        if slot != last:
            self.move(slot, last)
            self.slots[slot] = self.slots[last]
        self.slots.pop()
