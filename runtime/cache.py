"""The KV cache storage: per-layer K and V buffers allocated once, and the slot table.

Each buffer is ``[1, (capacity + 1) * T, heads, head_dim]`` on the backend's device,
token axis right after the batch axis, so slot ``s`` is the contiguous token run
``[s*T, (s+1)*T)`` and the views a render reads ``[0, n)`` are one contiguous prefix. The
encoder's outputs are bound to the first free slot (written in place); the decoder's past
inputs are bound to the prefix (read in place). Dropping a view moves the last slot into
the hole: exact, because cross-attention has no positional terms. The extra physical slot
lets a view be written before anything is committed or evicted.

Which slot and which victim is the policy's decision (policy.py); this class owns every
change to the slot table and the one copy each change needs.
"""

from __future__ import annotations

import numpy as np

from viewrt.contract import names as N
from viewrt.contract.manifest import Manifest
from viewrt.errors import ViewrtError
from viewrt.runtime.backends.base import Backend, Buffer
from viewrt.runtime.policy import AddPlan, Slot, SlotTable


class KVCache:
    """Buffers and slot table.

    Args:
        backend: an active backend (owns the memory).
        manifest: gives layers, heads, head_dim, tokens per view, cache dtype, tensor names.
        physical: slots allocated (capacity + 1).
    """

    def __init__(self, backend: Backend, manifest: Manifest, physical: int):
        self.backend, self.T = backend, manifest.tokens_per_view
        # Slot s starts s * slot_bytes into each buffer; backends that bind by address may
        # need every slot aligned (TensorRT: 256 bytes). Refuse before allocating anything.
        itemsize = manifest.np_kv_dtype.itemsize
        slot_bytes = self.T * manifest.n_heads * manifest.head_dim * itemsize
        align = int(getattr(backend, "address_alignment", 1))
        if slot_bytes % align:
            raise ViewrtError(
                f"one view's K/V ({self.T} tokens x {manifest.n_heads} heads x {manifest.head_dim} x "
                f"{itemsize} bytes = {slot_bytes} bytes) is not a multiple of the "
                f"{align}-byte address alignment the {backend.name} backend needs, so cache slots "
                "cannot be bound in place; use a config whose per-view K/V size is a multiple of it"
            )
        self.present = manifest.present_names
        self.past = {
            name: N.paired_name(name) for name in self.present
        }  # by layer and kind, never by position
        shape = (1, physical * self.T, manifest.n_heads, manifest.head_dim)  # [1, slots*T, H, Dh]
        self.buffers: list[Buffer] = [
            backend.alloc(shape, manifest.np_kv_dtype) for _ in self.present
        ]
        self.bytes_per_view = manifest.kv_bytes_per_view
        self.table = SlotTable(physical)

    def __len__(self) -> int:
        return len(self.table)

    @property
    def slots(self) -> list[Slot]:
        """The slot table (read it; change it only through this class)."""
        return list(self.table.slots)

    @property
    def reserved_bytes(self) -> int:
        return sum(b.nbytes for b in self.buffers)

    def slot_outputs(self, slot: int) -> dict[str, Buffer]:
        """Encoder output bindings that land in slot ``slot`` of every layer's K and V."""
        return {
            name: buf.tokens(slot * self.T, (slot + 1) * self.T)
            for name, buf in zip(self.present, self.buffers)
        }

    def prefix_inputs(self, n_views: int) -> dict[str, Buffer]:
        """Decoder past bindings: the first ``n_views`` slots of every buffer, in place."""
        return {
            self.past[name]: buf.tokens(0, n_views * self.T)
            for name, buf in zip(self.present, self.buffers)
        }

    def check_finite(self, slot: int) -> None:
        """Raise ViewrtError when what the encoder wrote into ``slot`` is not finite."""
        for name, buf in self.slot_outputs(slot).items():
            data = buf.host if buf.host is not None else self.backend.download(buf)
            # one reduction pass; only a non-finite sum (NaN/inf, or fp32 overflow of the sum) needs the exact check
            if (
                not np.isfinite(np.add.reduce(data, axis=None, dtype=np.float32))
                and not np.isfinite(data).all()
            ):
                raise ViewrtError(
                    f"the encoder wrote non-finite values to '{name}' (beyond the range of the export's "
                    f"{np.dtype(buf.dtype).name} cache): camera coordinates too large for it; normalize the "
                    "scene (pass its frame to open()) or use an fp32 export"
                )

    def _move(self, dst: int, src: int) -> None:
        for buf in self.buffers:
            self.backend.copy(
                buf.tokens(dst * self.T, (dst + 1) * self.T),
                buf.tokens(src * self.T, (src + 1) * self.T),
            )

    def drop(self, view_id: int) -> None:
        """Forget a view; the last slot moves into its place."""
        move = self.table.remove(view_id)
        if move is not None:
            self._move(*move)

    def commit(self, plan: AddPlan) -> None:
        """Record the view written at ``plan.slot`` and drop what the plan evicts."""
        if plan.slot != len(self.table):
            raise RuntimeError("a plan must write the first free slot")
        self.table.append(plan.entry)
        for view_id in plan.drop:
            self.drop(view_id)

    def clear(self) -> None:
        self.table.clear()
