"""The ``llmwb`` command: look at, check and describe bundles.

Exit codes: 0 success, 1 a check found a difference (``diff``) or a seal or proof
INVALID (``verify``, ``verify-proof``), 2 an error (message on stderr, with the fix).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from . import __version__

__all__ = ["main"]


def _short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _digest(value: str) -> str:
    return value.removeprefix("sha256:")[:12]


def _config_summary(config: dict[str, Any], digests: dict[str, str]) -> str:
    parts = []
    for key in sorted(config):
        value = config[key]
        if isinstance(value, (str, int, float, bool)) and len(str(value)) <= 40:
            parts.append(f"{key}={value}")
        else:
            parts.append(f"{key}=sha256:{_digest(digests.get(key, ''))}")
    return " ".join(parts)


def describe_fact(fact: Any) -> str:
    """One line describing a fact for ``llmwb show``."""
    from .replay import short
    from .schema import ArtifactFact, ErrorFact, GateFact, ModelIOFact, StepFact, ToolCallFact

    if isinstance(fact, StepFact):
        return fact.phase + (f" ({fact.status})" if fact.status and fact.status != "ok" else "")
    if isinstance(fact, ModelIOFact):
        usage = fact.usage
        line = f"{fact.provider}/{fact.request.model}"
        line += f" in={usage.input_tokens} out={usage.output_tokens}"
        if fact.cost is not None:
            line += f" cost={fact.cost.amount} {fact.cost.currency}"
        if fact.error is not None:
            return f"{line} error {fact.error.type}: {_short(fact.error.message, 60)}"
        response = fact.response
        if response is not None:
            if response.finish_reason:
                line += f" finish={response.finish_reason}"
            if response.tool_calls:
                line += " tools=" + ",".join(call.name for call in response.tool_calls)
            if response.content:
                line += f" {_short(response.content, 60)!r}"
        return line
    if isinstance(fact, ToolCallFact):
        args = ", ".join(f"{k}={v!r}" for k, v in fact.arguments.items())
        outcome = f"raised {fact.error.type}" if fact.error else f"-> {short(fact.result, 60)}"
        return f"{fact.tool}({_short(args, 60)}) {outcome}"
    if isinstance(fact, GateFact):
        line = f"{fact.gate_id}: {fact.decision} by {fact.reviewer.kind} {fact.reviewer.id}"
        if fact.subject is not None:
            line += f" on {fact.subject.kind}"
            if fact.subject.name:
                line += f" {fact.subject.name}"
            if fact.subject.revision is not None:
                line += f" rev {fact.subject.revision}"
            line += f" sha256:{_digest(fact.subject.digest)}"
        return line + (f" — {_short(fact.reason, 60)}" if fact.reason else "")
    if isinstance(fact, ArtifactFact):
        return f"{fact.name} rev {fact.revision} sha256:{_digest(fact.content_digest)}" + (
            f" ({fact.schema_ref})" if fact.schema_ref else ""
        )
    if isinstance(fact, ErrorFact):
        return f"{fact.type}: {_short(fact.message, 80)}"
    return ""


def show(path: str, out: TextIO) -> int:
    """Print a readable summary of the bundle at ``path``."""
    from decimal import Decimal

    from .store import load_bundle

    bundle = load_bundle(path)
    manifest, dag = bundle.manifest, bundle.dag
    out.write(f"bundle   {path}\n")
    out.write(f"run      {manifest.name}\n")
    out.write(
        f"schema   v{manifest.schema_version} ({manifest.producer}); "
        f"{manifest.fact_count} facts; dag sha256:{_digest(dag.digest)}\n"
    )
    declared = "declared" if dag.declared else "derived from the facts"
    out.write(f"\nDAG {dag.name} ({declared}): {len(dag.nodes)} nodes, {len(dag.edges)} edges\n")
    width = max((len(node.id) for node in dag.nodes), default=4)
    for node in dag.nodes:
        out.write(
            f"  {node.id:<{width}}  {node.kind:<8}  "
            f"{_config_summary(node.config, node.digests)}".rstrip()
            + "\n"
        )
    if dag.edges:
        out.write("  edges: " + ", ".join(f"{e.source} -> {e.target}" for e in dag.edges) + "\n")
    out.write("\nFacts\n")
    width = max((len(f.node) for f in bundle.facts), default=4)
    for fact in bundle.facts:
        out.write(
            f"  {fact.seq:>4}  {fact.kind:<9}  {fact.node:<{width}}  {describe_fact(fact)}".rstrip()
            + "\n"
        )
    gates = bundle.gates()
    if gates:
        out.write("\nGates\n")
        for gate in gates:
            policy = f" under {gate.policy.id} v{gate.policy.version}" if gate.policy else ""
            out.write(
                f"  {gate.gate_id}: {gate.decision} by {gate.reviewer.kind} "
                f"{gate.reviewer.id}{policy}\n"
            )
            if gate.reason:
                out.write(f"    reason: {gate.reason}\n")
    calls = bundle.model_io()
    totals = {"input": 0, "output": 0, "cache read": 0, "cache write": 0, "reasoning": 0}
    costs: dict[str, Decimal] = {}
    for call in calls:
        usage = call.usage
        totals["input"] += usage.input_tokens
        totals["output"] += usage.output_tokens
        totals["cache read"] += usage.cache_read_input_tokens
        totals["cache write"] += usage.cache_creation_input_tokens
        totals["reasoning"] += usage.reasoning_output_tokens
        if call.cost is not None:
            costs[call.cost.currency] = (
                costs.get(call.cost.currency, Decimal(0)) + call.cost.decimal
            )
    out.write(
        f"\nTokens   {len(calls)} model call(s): "
        + ", ".join(f"{value} {key}" for key, value in totals.items())
        + "\n"
    )
    if costs:
        out.write(
            "Cost     "
            + ", ".join(f"{amount} {cur}" for cur, amount in sorted(costs.items()))
            + "\n"
        )
    return 0


def cost(path: str, out: TextIO) -> int:
    """Print the tokens and cost of the bundle at ``path``, per node and artifact."""
    from .costs import summarize
    from .store import load_bundle

    summary = summarize(load_bundle(path).facts)
    out.write(f"total    {summary.total.describe()}\n")
    tokens = summary.total.tokens
    out.write(
        f"tokens   {tokens['input_tokens']} input ({tokens['cache_read_input_tokens']} cache read, "
        f"{tokens['cache_creation_input_tokens']} cache write), {tokens['output_tokens']} output "
        f"({tokens['reasoning_output_tokens']} reasoning)\n"
    )
    if summary.by_node:
        out.write("\nby node\n")
        width = max(len(node) for node in summary.by_node)
        for node, spend in summary.top_nodes(len(summary.by_node)):
            out.write(f"  {node:<{width}}  {spend.describe()}\n")
    if summary.by_artifact:
        out.write("\nby artifact revision (the model calls it was derived from)\n")
        width = max(len(name) for name in summary.by_artifact)
        for name, spend in summary.by_artifact.items():
            out.write(f"  {name:<{width}}  {spend.describe()}\n")
    return 0


def view(bundles: list[str], output: str | None, out: TextIO) -> int:
    """Write the viewer page of one bundle, or of two compared, and say where."""
    from .exceptions import ConfigError

    if len(bundles) > 2:
        raise ConfigError(
            f"llmwb view takes one bundle or two (OLD NEW), got {len(bundles)}",
            fix="llmwb view BUNDLE -o run.html, or llmwb view OLD NEW -o diff.html",
        )
    from .viewer import view_bundles

    path, about = view_bundles(bundles, output)
    if len(bundles) == 1:
        out.write(
            f"wrote {path}: run {about['run']}, {about['facts']} facts, "
            f"{about['gates']} gate decision(s), {about['nodes']} DAG node(s)\n"
        )
    else:
        out.write(f"wrote {path}: {about['summary']}\n")
    return 0


def _sealed(bundle: str) -> bool:
    from pathlib import Path

    return (Path(bundle) / "seal").is_dir()


def _seal_note(bundle: str, what: str) -> None:
    """Say that rewriting a sealed bundle broke its seal, and how to seal it again."""
    sys.stderr.write(
        f"llmwb: note: the seal of {bundle} {what}: the bundle changed; "
        f"seal it again with: llmwb seal {bundle} --key KEY\n"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmwb",
        description="Look at, check and describe pytest-llmwb bundles.",
        # one column for the commands' help on every Python (3.13 measures them wider)
        formatter_class=lambda prog: argparse.HelpFormatter(prog, max_help_position=16),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    show_cmd = commands.add_parser("show", help="print a readable summary of a bundle")
    show_cmd.add_argument("bundle", help="path to a bundle directory")

    schema_cmd = commands.add_parser("schema", help="print the JSON Schema of the bundle format")
    schema_cmd.add_argument(
        "part",
        nargs="?",
        default="bundle",
        choices=("bundle", "manifest", "dag", "fact"),
        help="which part (default: bundle, all of them)",
    )

    explain_cmd = commands.add_parser(
        "explain", help="why a gate decided as it did: decision, policy, subject, and its causes"
    )
    explain_cmd.add_argument("bundle", help="path to a bundle directory")
    explain_cmd.add_argument("--gate", help="the gate id (default: every gate that fired)")
    explain_cmd.add_argument(
        "--trust",
        action="append",
        default=[],
        metavar="KEYS",
        help="check signed decisions against these public keys (files or directories)",
    )

    cost_cmd = commands.add_parser(
        "cost", help="tokens and cost per node, per artifact revision and in total"
    )
    cost_cmd.add_argument("bundle", help="path to a bundle directory")

    rehash_cmd = commands.add_parser(
        "rehash", help="accept hand edits to facts.jsonl: validate it and update the manifest"
    )
    rehash_cmd.add_argument("bundle", help="path to a bundle directory")

    reprice_cmd = commands.add_parser(
        "reprice", help="price every model call of a bundle again with the current price table"
    )
    reprice_cmd.add_argument("bundle", help="path to a bundle directory")
    reprice_cmd.add_argument(
        "--price-file",
        metavar="FILE",
        help="TOML or JSON price file that overrides genai-prices (default: $LLMWB_PRICE_FILE)",
    )
    reprice_cmd.add_argument(
        "--dry-run", action="store_true", help="print old -> new costs; do not write the bundle"
    )

    diff_cmd = commands.add_parser(
        "diff",
        help="what changed between two runs: DAG, calls, gates, artifacts, tokens, cost "
        "(exit 0 same, 1 different, 2 error)",
    )
    diff_cmd.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="OLD NEW (bundles, or directories of bundles); with --rev, one PATH",
    )
    diff_cmd.add_argument(
        "--rev",
        action="append",
        metavar="REV",
        help="compare PATH as of this git revision with the work tree; "
        "given twice, as of the first with as of the second",
    )
    diff_cmd.add_argument(
        "--format",
        choices=("text", "markdown", "json"),
        default="text",
        help="text for terminals (default), markdown for PR comments, json for tools",
    )
    diff_cmd.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour the text format (auto: when writing to a terminal and NO_COLOR is unset)",
    )
    diff_cmd.add_argument(
        "--max-changes",
        type=int,
        default=50,
        metavar="N",
        help="show at most N changes per bundle, the most important first; "
        "the rest are counted (default 50; 0 shows all)",
    )
    diff_cmd.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="POINTER",
        help='a JSON pointer into facts not to compare, e.g. "/response/id" '
        "(* for any one key or index); repeatable",
    )
    diff_cmd.add_argument(
        "--no-order",
        action="store_true",
        help="do not report facts that moved (for hosts whose nodes run concurrently)",
    )
    export_cmd = commands.add_parser(
        "export",
        help="bundles as OpenTelemetry spans: one OTLP JSON TracesData per line",
    )
    export_cmd.add_argument("bundles", nargs="+", metavar="BUNDLE", help="bundle directories")
    export_cmd.add_argument(
        "--format", default="otlp-json", help="otlp-json (the OTel file exporter format)"
    )
    export_cmd.add_argument(
        "-o", "--output", metavar="FILE", help="write to FILE (atomically) instead of stdout"
    )
    view_cmd = commands.add_parser(
        "view",
        help="write one self-contained HTML page of a run (DAG, gates, timeline, costs), "
        "or of two runs compared",
    )
    view_cmd.add_argument(
        "bundles", nargs="+", metavar="BUNDLE", help="a bundle directory; or OLD NEW to compare"
    )
    view_cmd.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="the page to write (default: <bundle directory name>.html, or "
        "<NEW directory name>.diff.html, in the current directory)",
    )
    textconv_cmd = commands.add_parser(
        "textconv", help="a bundle file as readable text, for git (diff.llmwb.textconv)"
    )
    textconv_cmd.add_argument("file", help="manifest.json, dag.json, facts.jsonl or volatile.json")
    git_diff_cmd = commands.add_parser(
        "git-diff", help="the semantic diff of one bundle file, for git (diff.llmwb.command)"
    )
    git_diff_cmd.add_argument("git_args", nargs="*", help="the arguments git passes")
    _evidence_commands(commands)
    return parser


def _evidence_commands(commands: Any) -> None:
    trust_help = (
        "a trusted public key file, or a directory of *.pub files; repeatable "
        "(default: $LLMWB_TRUST). Never taken from the bundle"
    )
    keygen_cmd = commands.add_parser(
        "keygen", help="write a new Ed25519 key pair: KEY (private, 0600) and KEY.pub"
    )
    keygen_cmd.add_argument("key", help="path of the private key file to create")

    seal_cmd = commands.add_parser(
        "seal", help="sign a bundle: Merkle root over its facts and blobs, in a DSSE envelope"
    )
    seal_cmd.add_argument("bundle", help="path to a bundle directory")
    seal_cmd.add_argument(
        "--key", metavar="KEY", help="private key file (PEM, PKCS#8; default: $LLMWB_SEAL_KEY)"
    )

    verify_cmd = commands.add_parser(
        "verify",
        help="check a sealed bundle: VALID, VALID (redacted: ...) or INVALID "
        "(exit 0 valid, 1 invalid, 2 error)",
    )
    verify_cmd.add_argument("bundle", help="path to a sealed bundle directory")
    verify_cmd.add_argument("--trust", action="append", default=[], metavar="KEYS", help=trust_help)

    prove_cmd = commands.add_parser(
        "prove", help="one fact with its inclusion proof, as JSON an auditor checks alone"
    )
    prove_cmd.add_argument("bundle", help="path to a sealed bundle directory")
    prove_cmd.add_argument("--fact", type=int, required=True, metavar="SEQ", help="the fact's seq")
    prove_cmd.add_argument("--output", "-o", metavar="FILE", help="write to FILE, not stdout")

    verify_proof_cmd = commands.add_parser(
        "verify-proof",
        help="check a proof from llmwb prove against a trusted key (exit 0 valid, 1 invalid)",
    )
    verify_proof_cmd.add_argument("proof", help="the proof file (- for stdin)")
    verify_proof_cmd.add_argument(
        "--trust", action="append", default=[], metavar="KEYS", help=trust_help
    )

    redact_cmd = commands.add_parser(
        "redact", help="withhold fields of a sealed bundle; the seal stays valid"
    )
    redact_cmd.add_argument("bundle", help="path to a sealed bundle directory")
    redact_cmd.add_argument(
        "--path",
        action="append",
        required=True,
        metavar="SEQ/FIELD",
        help="a field to withhold, e.g. 3/response; repeatable",
    )


def _evidence(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Run an evidence command (keygen, seal, verify, prove, verify-proof, redact)."""
    import os

    import orjson

    from .evidence import keys
    from .evidence import seal as sealing
    from .exceptions import ProofError, SealError, SealVerificationError

    if args.command == "keygen":
        key = keys.generate_key(args.key)
        out.write(f"wrote {args.key} (private: keep it secret) and {args.key}.pub\n")
        out.write(f"keyid {key.keyid}\n")
        return 0
    if args.command == "seal":
        path = args.key or os.environ.get(keys.SEAL_KEY_ENV)
        if not path:
            raise SealError(
                "no seal key", fix=f"pass --key KEY or set {keys.SEAL_KEY_ENV} (llmwb keygen KEY)"
            )
        info = sealing.seal_bundle(args.bundle, path)
        out.write(
            f"sealed {args.bundle}: {info.fact_count} facts, {info.blob_count} blobs, "
            f"root sha256:{info.root[:16]}, key {info.keyid[:12]}\n"
        )
        return 0
    if args.command == "redact":
        done = sealing.redact_bundle(args.bundle, args.path)
        out.write(f"redacted {args.bundle}: withheld {', '.join(done.fields) or 'nothing new'}")
        out.write(f" and {len(done.blobs)} blob(s)\n" if done.blobs else "\n")
        if done.still_visible:
            err.write(
                f"llmwb redact: note: withheld text still appears in "
                f"{', '.join(done.still_visible)}; withhold those too if it matters: "
                + " ".join(f"--path {p}" for p in done.still_visible)
                + "\n"
            )
        return 0
    if args.command == "prove":
        proof = sealing.prove_fact(args.bundle, args.fact)
        data = orjson.dumps(proof, option=orjson.OPT_INDENT_2) + b"\n"
        if args.output:
            with open(args.output, "wb") as handle:
                handle.write(data)
            out.write(f"wrote the proof of fact {args.fact} to {args.output}\n")
        else:
            out.write(data.decode())
        return 0
    trust = keys.TrustStore.load(args.trust)
    try:
        if args.command == "verify":
            out.write(sealing.verify_bundle(args.bundle, trust).describe() + "\n")
            return 0
        source = sys.stdin.buffer.read() if args.proof == "-" else None
        if source is None:
            try:
                with open(args.proof, "rb") as handle:
                    source = handle.read()
            except OSError as exc:
                raise SealError(
                    f"cannot read proof {args.proof}: {exc.strerror or exc}",
                    fix="make one with: llmwb prove BUNDLE --fact SEQ -o PROOF",
                ) from None
        try:
            proof = orjson.loads(source)
        except orjson.JSONDecodeError as exc:
            raise ProofError(
                f"the proof is not JSON ({exc.msg})",
                where=args.proof,
                fix="make it again with: llmwb prove BUNDLE --fact SEQ -o PROOF",
            ) from None
        checked = sealing.check_proof(proof, trust, where=args.proof)
        out.write(checked.describe() + "\n")
        out.write(orjson.dumps(checked.fact, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    except SealVerificationError as exc:
        out.write(f"INVALID: {exc}\n")
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``llmwb`` command; returns the exit code."""
    from .exceptions import LlmwbError

    args = _parser().parse_args(argv)
    try:
        if args.command == "show":
            return show(args.bundle, sys.stdout)
        if args.command == "schema":
            import orjson

            from .schema import json_schema

            sys.stdout.write(
                orjson.dumps(
                    json_schema(args.part), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
                ).decode()
                + "\n"
            )
            return 0
        if args.command == "explain":
            from .explain import explain_gate
            from .store import load_bundle

            trust = None
            if args.trust:
                from .evidence.keys import TrustStore

                trust = TrustStore.load(args.trust)
            return explain_gate(load_bundle(args.bundle), args.gate, sys.stdout, trust)
        if args.command == "cost":
            return cost(args.bundle, sys.stdout)
        if args.command == "diff":
            from .diff.command import run

            return run(args, sys.stdout)
        if args.command == "export":
            from .otel.export import export_bundles

            return export_bundles(args.bundles, args.format, args.output, sys.stdout)
        if args.command == "view":
            return view(args.bundles, args.output, sys.stdout)
        if args.command == "textconv":
            from .textconv import textconv

            sys.stdout.write(textconv(args.file))
            return 0
        if args.command == "git-diff":
            from .diff.git import external_diff

            sys.stdout.write(external_diff(args.git_args))
            return 0
        if args.command == "rehash":
            from .store import rehash_bundle

            sealed = _sealed(args.bundle)
            bundle = rehash_bundle(args.bundle)
            sys.stdout.write(
                f"{args.bundle}: manifest updated ({bundle.manifest.fact_count} facts)\n"
            )
            if sealed:
                _seal_note(args.bundle, "is out of date (llmwb verify says INVALID)")
            return 0
        if args.command in ("keygen", "seal", "verify", "prove", "verify-proof", "redact"):
            return _evidence(args, sys.stdout, sys.stderr)
        if args.command == "reprice":
            from .pricing import default_table, reprice_bundle

            sealed = _sealed(args.bundle) and not args.dry_run
            code = reprice_bundle(
                args.bundle,
                table=default_table(args.price_file),
                dry_run=args.dry_run,
                out=sys.stdout,
            )
            if sealed and not _sealed(args.bundle):
                _seal_note(args.bundle, "was removed with the old costs")
            return code
    except LlmwbError as exc:
        sys.stderr.write(f"llmwb: error: {exc}\n")
        return 2
    raise AssertionError(f"unhandled command {args.command}")  # argparse rejects others


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
