"""Generate the shipped data files from seeded code, so they can be checked and rebuilt offline:

- chat_sft_train.jsonl / chat_sft_test.jsonl: short chats in one consistent, terse answer style
  (arithmetic, capitals, word puzzles; some multi-turn, some with a system prompt);
- tasks/arithmetic.jsonl: integer arithmetic questions graded by the number in the answer;
- tasks/multiple_choice.jsonl: a small general-knowledge multiple-choice set graded by letter;
- hub/no_robots_train.jsonl, hub/gsm8k_main_train.jsonl: rows shaped like the Hugging Face
  datasets tinker-cookbook's sl_loop and rl_loop load (`HuggingFaceH4/no_robots`: prompt,
  prompt_id, messages, category; `openai/gsm8k` config main: question, and an answer whose last
  line is `#### N`), for running those recipes offline (treadle_models.hub_cache writes them into
  an HF_HOME).

    python -m treadle_cookbook.data.generate
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from pathlib import Path

from treadle_cookbook.data import DATA_DIR

CAPITALS = {
    "France": "Paris",
    "Germany": "Berlin",
    "Italy": "Rome",
    "Spain": "Madrid",
    "Portugal": "Lisbon",
    "Japan": "Tokyo",
    "Canada": "Ottawa",
    "Australia": "Canberra",
    "Egypt": "Cairo",
    "Kenya": "Nairobi",
    "Brazil": "Brasilia",
    "Argentina": "Buenos Aires",
    "Peru": "Lima",
    "Chile": "Santiago",
    "Norway": "Oslo",
    "Sweden": "Stockholm",
    "Finland": "Helsinki",
    "Poland": "Warsaw",
    "Greece": "Athens",
    "Turkey": "Ankara",
    "India": "New Delhi",
    "China": "Beijing",
    "Thailand": "Bangkok",
    "Vietnam": "Hanoi",
    "Mexico": "Mexico City",
    "Ireland": "Dublin",
    "Austria": "Vienna",
    "Hungary": "Budapest",
    "Morocco": "Rabat",
    "Nigeria": "Abuja",
    "Ghana": "Accra",
    "Cuba": "Havana",
}
WORDS = [
    "planet",
    "river",
    "garden",
    "silver",
    "window",
    "orange",
    "pencil",
    "forest",
    "bridge",
    "castle",
    "rocket",
    "yellow",
    "winter",
    "summer",
    "guitar",
    "butter",
    "candle",
    "dragon",
    "island",
    "jacket",
    "kitten",
    "ladder",
    "marble",
    "needle",
    "pepper",
    "rabbit",
    "saddle",
    "tunnel",
    "valley",
    "wizard",
    "anchor",
    "basket",
    "cactus",
    "dinner",
    "engine",
    "falcon",
]
SYSTEM_PROMPTS = ["You are a concise assistant.", "Answer briefly and exactly."]


def _arithmetic(rng: random.Random) -> tuple[str, str]:
    op = rng.choice("+-*")
    a, b = (
        (rng.randint(2, 12), rng.randint(2, 12))
        if op == "*"
        else (rng.randint(10, 99), rng.randint(10, 99))
    )
    value = a + b if op == "+" else a - b if op == "-" else a * b
    sign = {"+": "+", "-": "-", "*": "×"}[op]
    return f"What is {a} {sign} {b}?", f"{a} {sign} {b} = {value}."


def _capital(rng: random.Random) -> tuple[str, str]:
    country = rng.choice(sorted(CAPITALS))
    return f"What is the capital of {country}?", f"The capital of {country} is {CAPITALS[country]}."


def _word(rng: random.Random) -> tuple[str, str]:
    word = rng.choice(WORDS)
    kind = rng.randrange(3)
    if kind == 0:
        return f"Spell '{word}' backwards.", f"'{word}' backwards is '{word[::-1]}'."
    if kind == 1:
        return (
            f"Write '{word}' in capital letters.",
            f"'{word}' in capital letters is '{word.upper()}'.",
        )
    return f"How many letters are in '{word}'?", f"'{word}' has {len(word)} letters."


SKILLS: list[Callable[[random.Random], tuple[str, str]]] = [_arithmetic, _capital, _word]


def chat_conversations(count: int, seed: int) -> list[dict[str, list[dict[str, str]]]]:
    """`count` conversations of one or two turns, a quarter with a system prompt."""
    rng = random.Random(seed)
    conversations = []
    for _ in range(count):
        messages = []
        if rng.random() < 0.25:
            messages.append({"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
        for _ in range(1 if rng.random() < 0.7 else 2):
            question, answer = rng.choice(SKILLS)(rng)
            messages += [
                {"role": "user", "content": question},
                {"role": "assistant", "content": answer},
            ]
        conversations.append({"messages": messages})
    return conversations


def arithmetic_tasks(count: int, seed: int) -> list[dict[str, str]]:
    """Integer arithmetic questions whose answer is one number."""
    rng = random.Random(seed)
    tasks = []
    for i in range(count):
        question, answer = _arithmetic(rng)
        value = answer.rsplit("= ", 1)[1].rstrip(".")
        tasks.append(
            {
                "id": f"arithmetic-{i:03d}",
                "prompt": f"{question} Answer with the number only.",
                "answer": value,
                "grader": "number",
            }
        )
    return tasks


NO_ROBOTS_CATEGORIES: dict[Callable[[random.Random], tuple[str, str]], str] = {
    _arithmetic: "Closed QA",
    _capital: "Open QA",
    _word: "Rewrite",
}


def no_robots_rows(count: int, seed: int) -> list[dict[str, object]]:
    """`count` single-turn chats in no_robots' columns, a quarter with a system prompt; the
    category follows the first question's kind, prompt_id is the prompt's SHA-256 as there."""
    rng = random.Random(seed)
    rows: list[dict[str, object]] = []
    for _ in range(count):
        skill = rng.choice(SKILLS)
        question, answer = skill(rng)
        messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        if rng.random() < 0.25:
            messages.insert(0, {"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
        rows.append(
            {
                "prompt": question,
                "prompt_id": hashlib.sha256(question.encode()).hexdigest(),
                "messages": messages,
                "category": NO_ROBOTS_CATEGORIES[skill],
            }
        )
    return rows


NAMES = ["Ava", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hugo", "Iris", "Jonas"]
ITEMS = ["apples", "marbles", "stickers", "books", "pencils", "cookies", "shells", "stamps"]


def _word_problem(rng: random.Random) -> tuple[str, str]:
    """A word problem of one or two steps and its worked answer (GSM8K's <<a+b=c>> notes)."""
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    a, b = rng.randint(3, 20), rng.randint(2, 12)
    kind = rng.randrange(3)
    if kind == 0:
        c = rng.randint(1, a + b - 1)
        total, left = a + b, a + b - c
        question = (
            f"{name} has {a} {item}, gets {b} more, then gives {c} away. "
            f"How many {item} does {name} have now?"
        )
        steps = [
            f"After getting more, {name} has {a} + {b} = <<{a}+{b}={total}>>{total} {item}.",
            f"After giving some away, {name} has {total} - {c} = <<{total}-{c}={left}>>{left}.",
        ]
        return question, "\n".join([*steps, f"#### {left}"])
    if kind == 1:
        each, total = b, a * b
        question = f"{name} buys {a} bags with {each} {item} in each. How many {item} is that?"
        steps = [f"{name} has {a} * {each} = <<{a}*{each}={total}>>{total} {item}."]
        return question, "\n".join([*steps, f"#### {total}"])
    groups = rng.randint(2, 6)
    total, share = groups * a, a
    question = (
        f"{name} shares {total} {item} equally among {groups} friends. "
        f"How many {item} does each friend get?"
    )
    steps = [f"Each friend gets {total} / {groups} = <<{total}/{groups}={share}>>{share} {item}."]
    return question, "\n".join([*steps, f"#### {share}"])


def gsm8k_rows(count: int, seed: int) -> list[dict[str, str]]:
    """`count` word problems in GSM8K's columns: question, and answer ending `#### N`."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        question, answer = _word_problem(rng)
        rows.append({"question": question, "answer": answer})
    return rows


MULTIPLE_CHOICE = [
    ("Which planet is closest to the Sun?", ["Venus", "Mercury", "Mars", "Earth"], "B"),
    ("How many legs does a spider have?", ["Six", "Ten", "Eight", "Four"], "C"),
    (
        "What is the boiling point of water at sea level in Celsius?",
        ["100", "90", "120", "80"],
        "A",
    ),
    (
        "Which gas do plants take in for photosynthesis?",
        ["Oxygen", "Nitrogen", "Helium", "Carbon dioxide"],
        "D",
    ),
    ("What is the largest ocean on Earth?", ["Atlantic", "Indian", "Pacific", "Arctic"], "C"),
    ("How many days are in a leap year?", ["365", "366", "364", "360"], "B"),
    (
        "Which animal is known as the king of the jungle?",
        ["Lion", "Tiger", "Elephant", "Bear"],
        "A",
    ),
    ("What is the chemical symbol for gold?", ["Ag", "Gd", "Go", "Au"], "D"),
    ("How many continents are there?", ["Five", "Six", "Seven", "Eight"], "C"),
    ("Which is the smallest prime number?", ["0", "1", "2", "3"], "C"),
    (
        "What colour do you get by mixing blue and yellow?",
        ["Green", "Purple", "Orange", "Brown"],
        "A",
    ),
    ("Which organ pumps blood through the body?", ["Lungs", "Heart", "Liver", "Kidney"], "B"),
    ("How many minutes are in an hour?", ["100", "30", "60", "90"], "C"),
    ("Which instrument has 88 keys?", ["Violin", "Flute", "Drum", "Piano"], "D"),
    ("What is the freezing point of water in Celsius?", ["0", "10", "-10", "32"], "A"),
    ("Which planet is known as the Red Planet?", ["Jupiter", "Mars", "Saturn", "Venus"], "B"),
    ("How many sides does a hexagon have?", ["Five", "Seven", "Eight", "Six"], "D"),
    ("What do bees make?", ["Milk", "Silk", "Honey", "Wax paper"], "C"),
    ("Which is the longest river in Africa?", ["Nile", "Congo", "Niger", "Zambezi"], "A"),
    ("What is 12 multiplied by 12?", ["124", "144", "132", "154"], "B"),
    (
        "Which language has the most native speakers?",
        ["English", "Spanish", "Hindi", "Mandarin Chinese"],
        "D",
    ),
    ("What is the hardest natural substance?", ["Gold", "Iron", "Diamond", "Quartz"], "C"),
    ("Which month has the fewest days?", ["February", "April", "June", "November"], "A"),
    ("What is the capital of Japan?", ["Osaka", "Tokyo", "Kyoto", "Nagoya"], "B"),
    ("How many strings does a standard guitar have?", ["Four", "Five", "Seven", "Six"], "D"),
    ("Which is a mammal?", ["Shark", "Dolphin", "Trout", "Octopus"], "B"),
    ("What is the square root of 81?", ["9", "8", "7", "6"], "A"),
    (
        "Which star is at the centre of our solar system?",
        ["Sirius", "Polaris", "The Sun", "Vega"],
        "C",
    ),
    ("What is H2O commonly called?", ["Salt", "Sugar", "Air", "Water"], "D"),
    ("How many hours are in a day?", ["12", "24", "36", "48"], "B"),
]


def multiple_choice_tasks() -> list[dict[str, str]]:
    """The multiple-choice set, each prompt listing its options A to D."""
    tasks = []
    for i, (question, options, answer) in enumerate(MULTIPLE_CHOICE):
        lines = [f"{letter}. {option}" for letter, option in zip("ABCD", options, strict=True)]
        prompt = "\n".join([question, *lines, "Answer with the letter of the correct option."])
        tasks.append({"id": f"mc-{i:03d}", "prompt": prompt, "answer": answer, "grader": "choice"})
    return tasks


def generated_files() -> dict[str, list[dict]]:
    """Every generated file's records, by path relative to the data directory."""
    return {
        "chat_sft_train.jsonl": chat_conversations(400, seed=1),
        "chat_sft_test.jsonl": chat_conversations(40, seed=2),
        "tasks/arithmetic.jsonl": arithmetic_tasks(100, seed=3),
        "tasks/multiple_choice.jsonl": multiple_choice_tasks(),
        "hub/no_robots_train.jsonl": no_robots_rows(48, seed=4),
        "hub/gsm8k_main_train.jsonl": gsm8k_rows(48, seed=5),
    }


def render_jsonl(records: list[dict]) -> str:
    """JSONL text of `records`, one object per line."""
    return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)


def main(directory: Path = DATA_DIR) -> None:
    """Write every generated file under `directory`."""
    for name, records in generated_files().items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render_jsonl(records), encoding="utf-8")
        print(f"{path}: {len(records)} records")


if __name__ == "__main__":
    main()
