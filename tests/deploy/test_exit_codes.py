"""The host's names for the agent's exit codes must be the agent's own numbers, both ways."""

from __future__ import annotations

import ast
from pathlib import Path

from pipeline.deploy.exit_codes import AgentExit

AGENT = Path(__file__).resolve().parents[2] / "device_agents" / "agent.py"


def agent_exit_codes() -> dict[str, int]:
    """``EXIT_*`` constants read from agent.py's source (importing it would need a runtime)."""
    tree = ast.parse(AGENT.read_text(encoding="utf-8"))
    codes = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name.startswith("EXIT_") and isinstance(node.value, ast.Constant):
                codes[name[len("EXIT_"):]] = node.value.value
    return codes


def test_every_agent_exit_code_has_a_host_name() -> None:
    codes = agent_exit_codes()
    assert codes, "no EXIT_* constants found in agent.py"
    assert codes == {member.name: int(member) for member in AgentExit}


def test_the_loaded_agent_exits_with_the_same_numbers() -> None:
    """Import the agent itself, so a code computed at run time cannot slip past the source reading."""
    from tests.helpers.agent_runner import load_agent_module as load_agent

    agent = load_agent()
    for member in AgentExit:
        assert getattr(agent, f"EXIT_{member.name}") == member, member.name
    assert sorted(name for name in vars(agent) if name.startswith("EXIT_")) == sorted(f"EXIT_{m.name}" for m in AgentExit)
