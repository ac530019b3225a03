"""A LangGraph graph recorded in the ledger by one callback handler; runs offline.

    aivcs-ledgerd --listen 127.0.0.1:50051 &       # or any daemon, via AIVCS_LEDGER_TARGET
    python clients/python/examples/langgraph_agent.py

The chat model is LangChain's GenericFakeChatModel, so no API key or
network is needed; swap in a real one and nothing else changes.
"""

from __future__ import annotations

from typing import TypedDict

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langgraph.graph import END, START, StateGraph

from aivcs.ledger import Client
from aivcs.ledger.langchain import LedgerCallbackHandler


class State(TypedDict, total=False):
    question: str
    answer: str


model = GenericFakeChatModel(
    messages=iter(
        [AIMessage("Take an umbrella.", usage_metadata={"input_tokens": 9, "output_tokens": 4, "total_tokens": 13})]
    )
)


def answer(state: State) -> State:
    return {"answer": str(model.invoke(state["question"]).content)}


graph = StateGraph(State)
graph.add_node("answer", answer)
graph.add_edge(START, "answer")
graph.add_edge("answer", END)
app = graph.compile()

with Client() as client:  # $AIVCS_LEDGER_TARGET, default 127.0.0.1:50051
    handler = LedgerCallbackHandler(client, agent_name="weather-bot", graph=app)  # digest: the graph's structure
    result = app.invoke({"question": "Will it rain?"}, config={"callbacks": [handler]})
    run = client.runs.get(handler.run_id)
    print(f"answer: {result['answer']}")
    print(f"run {run.run_id}: {run.status.value}, {run.total_events} events")
    for event in client.events.read(run.run_id):
        print(f"  {event.seq:>2} {event.kind:<12} {event.payload.get('name')} {event.payload.get('usage') or ''}")
    handler.close()
