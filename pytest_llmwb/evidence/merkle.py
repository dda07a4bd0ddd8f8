"""RFC 9162 Merkle trees: leaf and node hashes, root, inclusion proofs and their check.

``leaf = SHA-256(0x00 || data)``, ``node = SHA-256(0x01 || left || right)``; a list of
``n > 1`` leaves splits at ``k``, the largest power of two smaller than ``n``. The
domain-separation prefixes keep a leaf from passing for a node (second preimages).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = ["inclusion_path", "leaf_hash", "node_hash", "root_from_path", "tree_root"]

_EMPTY = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """The hash of a leaf holding ``data``."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The hash of an inner node over its two children."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def tree_root(leaves: Sequence[bytes]) -> bytes:
    """The root over leaf hashes ``leaves`` (the hash of the empty string when empty).

    Built bottom-up, level by level: pairing left to right and carrying an odd last
    node up unchanged gives the same tree as RFC 9162's recursive split, without
    recursion and in linear time.
    """
    if not leaves:
        return _EMPTY
    level = list(leaves)
    while len(level) > 1:
        paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def inclusion_path(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """The audit path of leaf ``index`` (RFC 9162 section 2.1.3.1), nearest sibling first."""
    if not 0 <= index < len(leaves):
        raise IndexError(index)
    path: list[bytes] = []
    lo, hi = 0, len(leaves)
    # walk down from the root, remembering the sibling subtree at each split
    siblings: list[bytes] = []
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            siblings.append(tree_root(leaves[lo + k : hi]))
            hi = lo + k
        else:
            siblings.append(tree_root(leaves[lo : lo + k]))
            lo = lo + k
    path.extend(reversed(siblings))
    return path


def root_from_path(leaf: bytes, index: int, size: int, path: Sequence[bytes]) -> bytes | None:
    """The root that a leaf hash and its audit path lead to (RFC 9162 section 2.1.3.2).

    ``None`` when the path cannot belong to a tree of ``size`` leaves with the leaf at
    ``index`` (wrong length, index out of range).
    """
    if not 0 <= index < size:
        return None
    fn, sn = index, size - 1
    r = leaf
    for p in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None
