"""Off-policy distillation: sample the teacher's answers to the prompts, then fine-tune the student
on them with plain supervised learning (hard-target cross-entropy on the teacher's tokens).

Key decision: only answers that ended cleanly with the renderer's stop sequence become training
conversations, so the student never learns to stop mid-sentence from answers cut at max_tokens.
Training itself is the supervised loop (`treadle_cookbook.supervised.train`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from treadle import SamplingClient, types
from treadle_cookbook.renderers import Message, Renderer
from treadle_cookbook.supervised.data import Conversation


async def sample_teacher_conversations(
    teacher: SamplingClient,
    renderer: Renderer,
    prompts: Sequence[Sequence[Message]],
    samples_per_prompt: int,
    max_tokens: int,
    temperature: float = 1.0,
    seed: int = 0,
) -> list[Conversation]:
    """Each prompt followed by each of the teacher's clean answers to it."""
    stop = renderer.get_stop_sequences()
    responses = await asyncio.gather(
        *(
            teacher.sample(
                renderer.build_generation_prompt(list(prompt)),
                samples_per_prompt,
                types.SamplingParams(
                    max_tokens=max_tokens, temperature=temperature, stop=stop, seed=seed + i
                ),
            )
            for i, prompt in enumerate(prompts)
        )
    )
    conversations = []
    for i, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
        for j, sequence in enumerate(response.sequences):
            message, clean = renderer.parse_response(sequence.tokens)
            if clean and message["content"].strip():
                conversations.append(
                    Conversation([*prompt, message], source=f"teacher prompt {i} sample {j}")
                )
    return conversations
