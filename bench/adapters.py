"""`python -m bench.adapters [--smoke]`: what the LangChain handler adds to each step of a graph.

Two LangGraph graphs, of `--nodes` and of a quarter as many nodes in a
chain, each node calling LangChain's fake chat model (a step: one node and
one model call, four events), each invoked `--invocations` times without a
handler and with one, interleaved so all rows see the same machine load;
the daemon is the real one on durable storage. Rows: no handler; the
handler ("block", the default: each invocation also waits at its end for
its run to be stored and ended); "drop" (it never waits); "drop" with the
ledger away (a closed port), the case that must not slow the agent.
Per step = the slope between the two sizes of (median with - median
without), so what an invocation pays once (creating and ending the run,
the end's wait) is apart, as "per invocation"; and the ratio with/without
on the larger graph. JSON in bench-results/adapters.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import socket
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict

from aivcs.ledger import Client
from aivcs.ledger.langchain import LedgerCallbackHandler
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langgraph.graph import END, START, StateGraph

from bench.daemon_figures import say
from bench.servers import REPO, start_ledger_daemon


class State(TypedDict, total=False):
    text: str
    steps: int


def chain_graph(nodes: int) -> Any:
    usage = {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}
    model = GenericFakeChatModel(messages=itertools.cycle([AIMessage("ok", usage_metadata=usage)]))

    def step(state: State) -> State:
        reply = model.invoke(state.get("text", "go"))
        return {"text": str(reply.content), "steps": state.get("steps", 0) + 1}

    graph = StateGraph(State)
    previous = START
    for index in range(nodes):
        graph.add_node(f"step{index}", step)
        graph.add_edge(previous, f"step{index}")
        previous = f"step{index}"
    graph.add_edge(previous, END)
    return graph.compile()


def closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.adapters", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=20, help="steps per invocation")
    parser.add_argument("--invocations", type=int, default=100, help="invocations per row")
    parser.add_argument("--smoke", action="store_true", help="5 nodes, 10 invocations: only checks it runs")
    parser.add_argument("--out", type=Path, default=REPO / "bench-results" / "adapters.json")
    args = parser.parse_args(argv)
    if args.smoke:
        args.nodes, args.invocations = 5, 10
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    sizes = [max(1, args.nodes // 4), args.nodes]
    apps = {n: chain_graph(n) for n in sizes}
    with tempfile.TemporaryDirectory(prefix="bench-adapters-") as tmp:
        daemon = start_ledger_daemon(Path(tmp))
        try:
            with Client(daemon.target) as client, Client(closed_port(), timeout=1) as away:
                handlers = {
                    "handler, block": LedgerCallbackHandler(client, agent_name="bench-adapters"),
                    "handler, drop": LedgerCallbackHandler(client, agent_name="bench-adapters", when_full="drop"),
                    "handler, drop, ledger away": LedgerCallbackHandler(
                        away, agent_name="bench-adapters", when_full="drop", retry_timeout=3600
                    ),
                }
                rows: dict[tuple[str, int], Callable[[], Any]] = {}
                for n, app in apps.items():

                    def bare(app: Any = app) -> Any:
                        return app.invoke({"text": "go"})

                    rows["no handler", n] = bare
                    for name, handler in handlers.items():

                        def handled(h: LedgerCallbackHandler = handler, app: Any = app) -> Any:
                            return app.invoke({"text": "go"}, config={"callbacks": [h]})

                        rows[name, n] = handled
                for call in rows.values():  # warm up: imports, first stream, first run
                    call()
                times: dict[tuple[str, int], list[float]] = {key: [] for key in rows}
                say(f"{args.invocations} invocations x {len(rows)} rows, graphs of {sizes} nodes")
                for _ in range(args.invocations):
                    for key, call in rows.items():
                        started = time.perf_counter()
                        call()
                        times[key].append(time.perf_counter() - started)
                for name in ("handler, block", "handler, drop"):
                    assert handlers[name].flush(timeout=120), f"{name}: the ledger did not catch up"
                stored = sum(
                    client.runs.get(run_id).total_events for h in list(handlers.values())[:2] for run_id in h.run_ids
                )
                dropped = {name: h.dropped for name, h in handlers.items()}
                for handler in handlers.values():
                    handler.close(timeout=5)
        finally:
            daemon.stop()
    small, large = sizes
    median = {key: statistics.median(samples) for key, samples in times.items()}
    report: dict[str, Any] = {
        "nodes": sizes,
        "invocations": args.invocations,
        "events_stored": stored,
        "dropped": dropped,
        "rows": {},
    }
    print(f"\ngraphs of {small} and {large} nodes, each node one fake chat-model call; medians of {args.invocations}")
    print(f"{'':<28} {'invocation':>12} {'step':>9} {'added/step':>11} {'added/invocation':>17} {'ratio':>6}")
    for name in ["no handler", *handlers]:
        added_small = median[name, small] - median["no handler", small]
        added_large = median[name, large] - median["no handler", large]
        per_step = (added_large - added_small) / (large - small)
        fixed = added_large - per_step * large
        ratio = median[name, large] / median["no handler", large]
        report["rows"][name] = {
            "median_invocation_ms": median[name, large] * 1e3,
            "per_step_us": median[name, large] / large * 1e6,
            "added_per_step_us": per_step * 1e6,
            "added_per_invocation_ms": fixed * 1e3,
            "ratio": ratio,
        }
        print(
            f"{name:<28} {median[name, large] * 1e3:>9.2f} ms {median[name, large] / large * 1e6:>6.0f} µs "
            f"{per_step * 1e6:>8.0f} µs {fixed * 1e3:>14.2f} ms {ratio:>6.2f}"
        )
    print(f"events stored: {stored}; dropped: {dropped}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
