"""Benchmark: verifying a sealed 100 MB bundle, and one fact's proof in a 100k-fact bundle.

    python benchmarks/bench_evidence.py            # 100 MB and 100,000 facts
    python benchmarks/bench_evidence.py --quick    # 4 MB and 2,000 facts: a smoke test

Verification: a run of 100 model calls whose prompts are 1 MB each (stored as blobs:
what makes real bundles large) and 1,000 small tool calls is recorded, sealed, and
then, interleaved round by round:

- ``sha256``: read every file of the bundle and SHA-256 it with hashlib: the baseline,
  the raw hashing throughput of the stored bytes;
- ``verify``: ``verify_bundle`` (signature, manifest, every fact's commitments and
  leaf, every blob, the Merkle root).

Reported: the verify time as a ratio to the baseline (goal: at most 2, i.e. verify at
50% of raw SHA-256 throughput or better).

Proofs: a run of 100,000 small tool calls is recorded and sealed; the proof of its
middle fact is made once. Reported: the size of its inclusion part (index, tree size,
audit path; goal under 1 KiB) and the whole proof file, and the time of
``verify_proof`` (goal: under 1 ms) against one Ed25519 signature check, interleaved.
Nothing is asserted.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import orjson
from bench_stats import BenchResult, Row, interleaved, median, paired_ratios

from pytest_llmwb import (
    Dag,
    ModelResponse,
    Run,
    prove_fact,
    seal_bundle,
    verify_bundle,
    verify_proof,
)
from pytest_llmwb.evidence.keys import TrustStore, generate_key, pae

NAME = "evidence"


def _big_run(path: Path, blobs: int, blob_mb: float, small: int) -> None:
    dag = Dag("big").model("answer", model="m-1").tool("lookup")
    size = int(blob_mb * 1024 * 1024)
    with Run("big", dag=dag) as run:
        for i in range(blobs):
            word = f"paragraph {i} of the attached contract. "
            prompt = (word * (size // len(word) + 1))[:size]
            run.model_io(
                {"model": "m-1", "messages": [{"role": "user", "content": prompt}]},
                lambda request, i=i: ModelResponse(content=f"summary {i}"),
                node="answer",
            )
        for i in range(small):
            run.tool_call("lookup", {"order": i}, lambda i=i: {"status": "shipped", "n": i})
    run.save(path)


def _many_facts(path: Path, count: int) -> None:
    with Run("many", dag=Dag("many").tool("lookup")) as run:
        for i in range(count):
            run.tool_call("lookup", {"order": i}, lambda i=i: {"status": "shipped", "n": i})
    run.save(path)


def _read_and_hash(root: Path) -> float:
    t = time.perf_counter()
    for file in sorted(root.rglob("*")):
        if file.is_file():
            hashlib.sha256(file.read_bytes()).digest()
    return time.perf_counter() - t


def run(quick: bool) -> BenchResult:
    """Run the benchmark and return its rows and details."""
    blobs, blob_mb, small = (4, 1.0, 100) if quick else (100, 1.0, 1_000)
    facts = 2_000 if quick else 100_000
    repeats = 3 if quick else 5
    result = BenchResult(NAME)
    with tempfile.TemporaryDirectory(prefix="llmwb-bench-evidence-") as tmp:
        root = Path(tmp)
        key = generate_key(root / "keys" / "bench")
        trust = TrustStore.load([root / "keys" / "bench.pub"])
        big = root / "big"
        started = time.perf_counter()
        _big_run(big, blobs, blob_mb, small)
        recorded_s = time.perf_counter() - started
        started = time.perf_counter()
        seal_bundle(big, key)
        sealed_s = time.perf_counter() - started
        total = sum(f.stat().st_size for f in big.rglob("*") if f.is_file())

        def verify() -> float:
            t = time.perf_counter()
            verify_bundle(big, trust)
            return time.perf_counter() - t

        samples = interleaved({"sha256": lambda: _read_and_hash(big), "verify": verify}, repeats)
        ratio = median(paired_ratios(samples["verify"], samples["sha256"]))
        result.rows.append(
            Row(
                NAME,
                f"llmwb verify of a {total / 1e6:.0f} MB sealed bundle",
                total / 1e6 / median(samples["verify"]),
                "MB/s",
                "read + hashlib SHA-256 of every file",
                total / 1e6 / median(samples["sha256"]),
                "MB/s",
                ratio,
                goal=2.0,
                note="time ratio; goal <= 2: at least 50% of raw SHA-256 throughput",
            )
        )

        many = root / "many"
        started = time.perf_counter()
        _many_facts(many, facts)
        many_recorded_s = time.perf_counter() - started
        started = time.perf_counter()
        seal_bundle(many, key)
        many_sealed_s = time.perf_counter() - started
        started = time.perf_counter()
        proof = prove_fact(many, facts // 2)
        prove_s = time.perf_counter() - started
        proof = orjson.loads(orjson.dumps(proof))  # as an auditor reads it
        inclusion_bytes = len(orjson.dumps(proof["inclusion"]))
        proof_bytes = len(orjson.dumps(proof))
        result.rows.append(
            Row(
                NAME,
                f"inclusion proof of one fact of {facts:,} (index, size, audit path)",
                inclusion_bytes,
                "bytes",
                "1 KiB budget",
                1024,
                "bytes",
                inclusion_bytes / 1024,
                goal=1.0,
                note=f"the whole proof file (fact, envelope) is {proof_bytes} bytes",
            )
        )
        envelope = proof["envelope"]
        signed = pae(envelope["payloadType"], base64.b64decode(envelope["payload"]))
        signature = base64.b64decode(envelope["signatures"][0]["sig"])
        public = next(iter(trust.keys.values()))
        checks = 200

        def check_proof() -> float:
            t = time.perf_counter()
            for _ in range(checks):
                verify_proof(proof, trust)
            return (time.perf_counter() - t) / checks

        def ed25519() -> float:
            t = time.perf_counter()
            for _ in range(checks):
                public.verifies(signature, signed)
            return (time.perf_counter() - t) / checks

        proof_samples = interleaved({"proof": check_proof, "ed25519": ed25519}, repeats)
        result.rows.append(
            Row(
                NAME,
                f"verify_proof of one fact of {facts:,}",
                median(proof_samples["proof"]) * 1e3,
                "ms",
                "one Ed25519 signature check",
                median(proof_samples["ed25519"]) * 1e3,
                "ms",
                median(paired_ratios(proof_samples["proof"], proof_samples["ed25519"])),
                note="goal: under 1 ms (absolute)",
            )
        )
        result.details = {
            "bundle_bytes": total,
            "blobs": blobs,
            "small_facts": small,
            "record_s": recorded_s,
            "seal_s": sealed_s,
            "verify_s": samples["verify"],
            "sha256_s": samples["sha256"],
            "facts": facts,
            "many_record_s": many_recorded_s,
            "many_seal_s": many_sealed_s,
            "prove_s": prove_s,
            "audit_path_hashes": len(proof["inclusion"]["path"]),
            "inclusion_bytes": inclusion_bytes,
            "proof_bytes": proof_bytes,
            "verify_proof_ms": [s * 1e3 for s in proof_samples["proof"]],
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    args = parser.parse_args(argv)
    result = run(args.quick)
    for row in result.rows:
        print(json.dumps(row.as_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
