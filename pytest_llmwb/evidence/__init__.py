"""Sealed bundles: tamper-evident packaging of a run that verifies offline.

- :mod:`.merkle` — RFC 9162 Merkle trees and inclusion proofs;
- :mod:`.keys` — Ed25519 keys, key ids, trust stores, DSSE envelopes;
- :mod:`.seal` — seal, verify, prove and redact bundles.

See ``docs/evidence.md`` for the format and the commands.
"""
