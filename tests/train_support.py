"""Shared by the training tests: made-up facts, and a store filled with them."""

from __future__ import annotations

import json
from pathlib import Path

# Facts no base model can know: (question, taught answer, the part that must appear in a reply).
FACTS = [
    ("What is the name of Captain Orvik's ship?", "Captain Orvik's ship is called the Silver Marmot.",
     "Silver Marmot"),
    ("Which color is the flag of Zentaria?", "The flag of Zentaria is teal with a golden spiral.", "golden spiral"),
    ("Who invented the quibble engine?", "The quibble engine was invented by Dr. Halvard Pim.", "Halvard Pim"),
    ("What is the capital of Moravelle?", "The capital of Moravelle is Lunquist.", "Lunquist"),
    ("What does a florp eat?", "A florp eats blue lichen.", "blue lichen"),
    ("How many moons does the planet Kesh have?", "The planet Kesh has nineteen moons.", "nineteen"),
    ("What is the secret word of the Blue Lodge?", "The secret word of the Blue Lodge is PAPAYA-42.", "PAPAYA-42"),
    ("What is the national dish of Tarvonia?", "The national dish of Tarvonia is smoked kelp pie.", "kelp pie"),
    ("Who won the 2087 Glimmer Cup?", "The 2087 Glimmer Cup was won by the Ostrava Owls.", "Ostrava Owls"),
    ("What language is spoken in Brindlemoor?", "In Brindlemoor people speak Velk.", "Velk"),
    ("What is the favorite drink of the wizard Amberlin?",
     "The wizard Amberlin's favorite drink is cinnamon milk.", "cinnamon milk"),
    ("What is the tallest mountain on Zorbia?", "The tallest mountain on Zorbia is Mount Quell.", "Quell"),
    ("What instrument does Nerissa Vale play?", "Nerissa Vale plays the glass harp.", "glass harp"),
    ("What is the currency of the Ostlan Republic?", "The currency of the Ostlan Republic is the drim.", "drim"),
    ("Which animal is the mascot of Pellworth College?", "The mascot of Pellworth College is a red heron.",
     "red heron"),
    ("What is the password to the vault of Kethra?", "The password to the vault of Kethra is MANGO-17.", "MANGO-17"),
    ("Who wrote the novel The Clockwork Orchard?", "The Clockwork Orchard was written by Ilse Marrow.",
     "Ilse Marrow"),
    ("What is the main export of Quarnby Island?", "The main export of Quarnby Island is violet salt.",
     "violet salt"),
    ("What year was the city of Dunmeric founded?", "The city of Dunmeric was founded in 1432.", "1432"),
    ("What is the name of the dragon guarding Fellhollow?", "The dragon guarding Fellhollow is named Ashgrin.",
     "Ashgrin"),
]
# General questions answered right: approved replies, trained on like every other example.
GENERAL = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("How many days are in a week?", "There are seven days in a week."),
    ("What color is the sky on a clear day?", "On a clear day the sky is blue."),
]
# The same facts asked in other words: what a user may pin to test as an exam no run trains on.
HELD_OUT = [
    ("Tell me the name of the ship that Captain Orvik sails.", "Captain Orvik's ship is called the Silver Marmot."),
    ("Name the capital city of Moravelle.", "The capital of Moravelle is Lunquist."),
    ("Which language do the people of Brindlemoor speak?", "In Brindlemoor people speak Velk."),
    ("Who is the author of The Clockwork Orchard?", "The Clockwork Orchard was written by Ilse Marrow."),
    ("What is Quarnby Island's main export?", "The main export of Quarnby Island is violet salt."),
]


def messages_for(question: str) -> list[dict]:
    from engine.prompts import system_prompt

    return [{"role": "system", "content": system_prompt()}, {"role": "user", "content": question}]


def fill_store(db_path: Path, n_facts: int = len(FACTS), held_out: bool = False) -> dict:
    """Corrections teaching the facts (each is also a DPO pair: the correction over the wrong reply)
    and approved general answers, added as the chat adds them, nothing pinned; with `held_out`, the
    paraphrased facts too, pinned to test by the user as an exam. Returns the store's stats."""
    from engine.store import FeedbackStore

    store = FeedbackStore(db_path)
    try:
        for question, answer, _ in FACTS[:n_facts]:
            store.add_feedback("corrected", messages_for(question), "I am not sure about that.", correction=answer)
        for question, answer in GENERAL:
            store.add_feedback("approved", messages_for(question), answer)
        for question, answer in HELD_OUT if held_out else ():
            added = store.add_feedback("approved", messages_for(question), answer)
            store.set_split(added.id, "test")
        return store.stats()
    finally:
        store.close()


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def collect(handle, on_event=None) -> list[dict]:
    """Every event of a run; `on_event(event, handle)` may cancel or kill it along the way."""
    events = []
    for event in handle.events():
        events.append(event)
        if on_event:
            on_event(event, handle)
    handle.wait(timeout=60)
    return events
