"""The model families the contract speaks: one module each, one row in :data:`FAMILIES`.

A family's declaration (:class:`viewrt.contract.family.FamilyContract`) is all the
manifest, the export spec, the TensorRT profiles, the memory arithmetic and the runtime's
memory need to know about it.
"""

from __future__ import annotations

from viewrt.contract.families.efficient_lvsm import EfficientLVSMContract
from viewrt.contract.families.gct_stream import GCTStreamContract
from viewrt.contract.family import FamilyContract
from viewrt.errors import ViewrtError

FAMILIES: dict[str, FamilyContract] = {
    c.name: c for c in (EfficientLVSMContract(), GCTStreamContract())
}


def family_contract(name: str) -> FamilyContract:
    """The contract of family ``name``.

    Raises: ViewrtError for a family this viewrt does not know.
    """
    if name not in FAMILIES:
        raise ViewrtError(
            f"model family {name!r} is not one this viewrt knows ({', '.join(FAMILIES)})"
        )
    return FAMILIES[name]
