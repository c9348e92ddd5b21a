"""Container ids (64 hex digits, shown as 12) and docker-style random names (`adjective_surname`)."""

from __future__ import annotations

import secrets

# Our own short lists (docker's namesgenerator uses the same idea: a mood and a scientist).
ADJECTIVES = (
    "agile", "bold", "brave", "bright", "calm", "clever", "cosmic", "curious", "daring", "eager",
    "elated", "epic", "fervent", "festive", "fond", "gentle", "happy", "hardy", "humble", "jolly",
    "keen", "kind", "lively", "loyal", "lucid", "merry", "modest", "nifty", "noble", "patient",
    "placid", "plucky", "proud", "quiet", "quirky", "rapid", "serene", "sharp", "silly", "sleepy",
    "steady", "stoic", "sunny", "swift", "tender", "tidy", "upbeat", "vibrant", "witty", "zealous",
)
SURNAMES = (
    "agnesi", "babbage", "bardeen", "bohr", "boole", "cannon", "curie", "darwin", "dijkstra", "einstein",
    "euler", "faraday", "fermat", "feynman", "franklin", "galileo", "gauss", "goodall", "hamilton", "hawking",
    "hodgkin", "hopper", "hypatia", "johnson", "kepler", "knuth", "lamarr", "lovelace", "maxwell", "meitner",
    "mendel", "minsky", "newton", "noether", "pascal", "pasteur", "planck", "poincare", "ramanujan", "ritchie",
    "sammet", "shannon", "tesla", "thompson", "torvalds", "turing", "volta", "wiles", "wozniak", "yalow",
)


def new_id() -> str:
    return secrets.token_hex(32)


def random_name(taken: set[str]) -> str:
    """A free `adjective_surname`, with a digit appended after a few collisions (as docker does)."""
    for attempt in range(64):
        name = f"{secrets.choice(ADJECTIVES)}_{secrets.choice(SURNAMES)}"
        if attempt >= 8:
            name += str(secrets.randbelow(10))
        if name not in taken:
            return name
    return f"{secrets.choice(ADJECTIVES)}_{secrets.choice(SURNAMES)}_{secrets.token_hex(3)}"
