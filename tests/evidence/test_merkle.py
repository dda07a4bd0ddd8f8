"""RFC 9162 Merkle trees against the RFC's recursive definition, and inclusion proofs."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from pytest_llmwb.evidence.merkle import (
    inclusion_path,
    leaf_hash,
    node_hash,
    root_from_path,
    tree_root,
)


def mth(data: list[bytes]) -> bytes:
    """MTH of RFC 9162 section 2.1.1, written as the RFC defines it."""
    if not data:
        return hashlib.sha256(b"").digest()
    if len(data) == 1:
        return hashlib.sha256(b"\x00" + data[0]).digest()
    k = 1
    while k * 2 < len(data):
        k *= 2
    return hashlib.sha256(b"\x01" + mth(data[:k]) + mth(data[k:])).digest()


def test_domain_separation_prefixes() -> None:
    assert leaf_hash(b"a") == hashlib.sha256(b"\x00a").digest()
    assert node_hash(b"l", b"r") == hashlib.sha256(b"\x01lr").digest()
    # a leaf holding two hashes is not the node over them
    left, right = leaf_hash(b"a"), leaf_hash(b"b")
    assert tree_root([leaf_hash(left + right)]) != tree_root([left, right])


@given(st.lists(st.binary(max_size=8), max_size=70))
def test_root_matches_the_rfc_definition(data: list[bytes]) -> None:
    assert tree_root([leaf_hash(d) for d in data]) == mth(data)


@given(st.lists(st.binary(max_size=4), min_size=1, max_size=70, unique=True), st.data())
def test_every_inclusion_proof_leads_to_the_root_and_no_other(
    data: list[bytes], draw: st.DataObject
) -> None:
    leaves = [leaf_hash(d) for d in data]
    root = mth(data)
    index = draw.draw(st.integers(0, len(leaves) - 1))
    path = inclusion_path(leaves, index)
    assert len(path) <= max(1, len(leaves) - 1).bit_length()
    assert root_from_path(leaves[index], index, len(leaves), path) == root
    assert root_from_path(leaf_hash(b"forged"), index, len(leaves), path) != root
    if len(leaves) > 1:
        other = (index + 1) % len(leaves)
        assert root_from_path(leaves[index], other, len(leaves), path) != root
        assert root_from_path(leaves[index], index, len(leaves), path[:-1]) != root
        assert root_from_path(leaves[index], index, len(leaves), [*path, root]) is None
    assert root_from_path(leaves[index], len(leaves), len(leaves), path) is None


def test_an_audit_path_of_100k_leaves_has_17_hashes() -> None:
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(100_000)]
    path = inclusion_path(leaves, 54_321)
    assert len(path) == 17
    assert root_from_path(leaves[54_321], 54_321, 100_000, path) == tree_root(leaves)
