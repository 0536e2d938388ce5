"""What each role is told, how deep it reasons, and how many tokens it may spend.

Depth prompts paraphrase the INFRAMIND authors' three strategies (ACCURACY.md
Table 4: Flash = final answer only, Concise = 2-3 short reasoning points,
DeepThink = full step-by-step with a self-check). The authors capped every
depth at 2,048 tokens and steered depth by prompt alone; here each depth also
gets its own cap so that a Flash call really is cheap.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..vocab import Depth, Role

DEPTH_PROMPTS: dict[Depth, str] = {
    Depth.FLASH: "Give only the final answer. Do not explain.",
    Depth.CONCISE: "Reason in two or three short points, then give the final answer.",
    Depth.DEEPTHINK: (
        "Work step by step. State your assumptions, solve carefully, check the result, "
        "then give the final answer on its own line."
    ),
}

# Default completion caps per depth; a pipeline config may lower them.
DEPTH_MAX_TOKENS: dict[Depth, int] = {Depth.FLASH: 64, Depth.CONCISE: 256, Depth.DEEPTHINK: 1024}

ROLE_PROMPTS: dict[Role, str] = {
    Role.SOLVER: "You solve the user's task.",
    Role.DRAFTER: "You write a first draft answer to the user's task.",
    Role.REFINER: "You improve the draft below: fix mistakes, keep what is right.",
    Role.DEBATER: (
        "You are one of several agents debating the task. Consider the other agents' answers "
        "below, if any, and give your own best answer."
    ),
    Role.PROPOSER: "You propose an answer to the user's task, independently of others.",
    Role.AGGREGATOR: (
        "Several agents proposed answers below. Combine them into the single best answer; "
        "prefer what most agree on unless it is clearly wrong."
    ),
    Role.VERIFIER: (
        "Check the proposed answer below for errors. If it is right, repeat it; "
        "if it is wrong, give the corrected answer."
    ),
}


def build_messages(
    role: Role,
    depth: Depth,
    user_messages: Sequence[dict[str, str]],
    context: Sequence[str] = (),
) -> list[dict[str, str]]:
    """The chat messages of one agent step: role and depth, the user's turn, prior answers.

    The client's own system messages (a persona, an output format) follow the role and
    depth in the one system message: every agent of the pipeline keeps them."""
    system = f"{ROLE_PROMPTS[role]} {DEPTH_PROMPTS[depth]}"
    own = [m["content"] for m in user_messages if m.get("role") == "system" and m["content"]]
    if own:
        system = "\n\n".join([system, *own])
    messages = [{"role": "system", "content": system}]
    messages += [m for m in user_messages if m.get("role") != "system"]
    if context:
        shown = "\n\n".join(f"[Answer {i + 1}]\n{text}" for i, text in enumerate(context))
        messages.append({"role": "user", "content": f"Answers so far:\n\n{shown}"})
    return messages
