"""The LangGraph graph: profile → skill agents (parallel) → integrator → gate → report → approval → export.

State is checkpointed (SQLite in the run folder), so a run pauses at approval and resumes
in another process, and a killed run resumes from its last checkpoint.
"""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph

from sol.agent.nodes import Nodes
from sol.agent.state import RunState


def build_graph(executor_factory, checkpointer):
    """Compile the optimization graph; ``executor_factory()`` gives the executor on first use."""
    nodes = Nodes(executor_factory)
    g = StateGraph(RunState)
    g.add_node("profile", nodes.profile)
    g.add_node("skill_agent", nodes.skill_agent)
    g.add_node("integrator", nodes.integrator)
    g.add_node("gate", nodes.gate)
    g.add_node("report", nodes.report)
    g.add_node("approval", nodes.approval, destinations=("export", "integrator"))
    g.add_node("export", nodes.export)
    g.add_edge(START, "profile")
    g.add_conditional_edges("profile", nodes.fan_out, ["skill_agent", "integrator"])
    g.add_edge("skill_agent", "integrator")
    g.add_edge("integrator", "gate")
    g.add_edge("gate", "report")
    g.add_edge("report", "approval")
    g.add_edge("export", END)
    return g.compile(checkpointer=checkpointer)
