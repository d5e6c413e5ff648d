"""K/V storage: per-layer K and V buffers allocated once on the backend's device, and the
bindings that let the graphs write and read them in place. No policy here: which entry
goes where is the memory kind's decision (view_slots.py, token_window.py).

A region is ``[1, entries * T, heads, head_dim]`` per cached K and V tensor, token axis
right after the batch axis, so entry slot ``s`` is the contiguous token run
``[s*T, (s+1)*T)`` and the first ``n`` slots are one contiguous prefix: the writer graph's
``present_*`` outputs are bound to a slot (written in place), the reader graph's ``past_*``
inputs to the prefix (read in place).
"""

from __future__ import annotations

import numpy as np

import viewrt.contract.names as N
from viewrt.contract.manifest import Manifest
from viewrt.errors import ViewrtError
from viewrt.runtime.backends.base import Backend, Buffer


class KVStorage:
    """Buffers of one token region for every cached K/V tensor.

    Args:
        backend: an active backend (owns the memory).
        manifest: the cache geometry (layers, heads, head_dim, tokens per entry), the cache
            dtype and the writer's ``present_*`` names.
        slots: entries the region holds.
        tokens_per_slot: tokens of one slot (default: the geometry's tokens per entry).
        role: the reader inputs this region binds (``past``; a family may declare others).
        names: the writer outputs it holds (default: the manifest's ``present_*``; a side
            cache's, e.g. ``camera_present_*``), paired with ``role`` inputs by layer/kind.
    Raises: ViewrtError when one slot's bytes break the backend's address alignment.
    """

    def __init__(
        self,
        backend: Backend,
        manifest: Manifest,
        slots: int,
        tokens_per_slot: int | None = None,
        role: str = "past",
        names: list[str] | None = None,
    ):
        geo = manifest.cache
        self.backend = backend
        self.T = geo.tokens_per_entry if tokens_per_slot is None else int(tokens_per_slot)
        itemsize = manifest.np_kv_dtype.itemsize
        slot_bytes = self.T * geo.n_heads * geo.head_dim * itemsize
        align = int(getattr(backend, "address_alignment", 1))
        if slot_bytes % align:
            raise ViewrtError(
                f"one {geo.entry}'s K/V ({self.T} tokens x {geo.n_heads} heads x {geo.head_dim} x "
                f"{itemsize} bytes = {slot_bytes} bytes) is not a multiple of the "
                f"{align}-byte address alignment the {backend.name} backend needs, so cache slots "
                f"cannot be bound in place; use a config whose per-{geo.entry} K/V size is a "
                "multiple of it"
            )
        self.present = list(manifest.present_names if names is None else names)
        # reader inputs, paired with the writer's outputs by layer and kind, never by position
        self.read_names = {name: _role_name(name, role) for name in self.present}
        self.slots = slots
        shape = (1, slots * self.T, geo.n_heads, geo.head_dim)  # [1, slots*T, H, Dh]
        self.buffers: list[Buffer] = [
            backend.alloc(shape, manifest.np_kv_dtype) for _ in self.present
        ]

    @property
    def reserved_bytes(self) -> int:
        return sum(b.nbytes for b in self.buffers)

    def slot_outputs(self, slot: int, tokens: int | None = None) -> dict[str, Buffer]:
        """Writer output bindings that land in slot ``slot`` (its first ``tokens``)."""
        n = self.T if tokens is None else tokens
        return {
            name: buf.tokens(slot * self.T, slot * self.T + n)
            for name, buf in zip(self.present, self.buffers)
        }

    def range_outputs(self, first_slot: int, n_slots: int, shape: tuple) -> dict[str, Buffer]:
        """Writer output bindings over ``n_slots`` consecutive slots, seen as ``shape``
        (e.g. a prefill's ``[F, T, heads, head_dim]``: the same bytes as ``[1, F*T, ...]``)."""
        a, b = first_slot * self.T, (first_slot + n_slots) * self.T
        return {name: buf.tokens(a, b).view(shape) for name, buf in zip(self.present, self.buffers)}

    def prefix_inputs(self, n_tokens: int) -> dict[str, Buffer]:
        """Reader input bindings: the first ``n_tokens`` tokens of every buffer, in place."""
        return {
            self.read_names[name]: buf.tokens(0, n_tokens)
            for name, buf in zip(self.present, self.buffers)
        }

    def check_finite(self, slot: int) -> None:
        """Raise ViewrtError when what the writer put into ``slot`` is not finite."""
        for name, buf in self.slot_outputs(slot).items():
            data = buf.host if buf.host is not None else self.backend.download(buf)
            # one reduction pass; only a non-finite sum needs the exact check
            if (
                not np.isfinite(np.add.reduce(data, axis=None, dtype=np.float32))
                and not np.isfinite(data).all()
            ):
                raise ViewrtError(
                    f"the encoder wrote non-finite values to '{name}' (beyond the range of the "
                    f"export's {np.dtype(buf.dtype).name} cache): camera coordinates too large "
                    "for it; normalize the scene (pass its frame to open()) or use an fp32 export"
                )

    def move(self, dst: int, src: int, tokens: int | None = None) -> None:
        """Copy slot ``src`` (its first ``tokens``) over slot ``dst`` in every buffer."""
        n = self.T if tokens is None else tokens
        for buf in self.buffers:
            self.backend.copy(
                buf.tokens(dst * self.T, dst * self.T + n),
                buf.tokens(src * self.T, src * self.T + n),
            )

    def copy_tokens(self, other: KVStorage, dst_token: int, src_slot: int, tokens: int) -> None:
        """Copy the first ``tokens`` of ``other``'s slot ``src_slot`` to token ``dst_token``
        of this region (e.g. an evicted frame's retained tokens)."""
        for mine, theirs in zip(self.buffers, other.buffers):
            self.backend.copy(
                mine.tokens(dst_token, dst_token + tokens),
                theirs.tokens(src_slot * other.T, src_slot * other.T + tokens),
            )


def _role_name(present: str, role: str) -> str:
    """``present_key.3`` -> ``<role>_key.3``."""
    parsed = N.parse_kv_name(present)
    if parsed is None:
        raise ViewrtError(f"{present!r} is not a K/V cache tensor name")
    _, kind, layer = parsed
    return N.kv_name(role, kind, layer)
