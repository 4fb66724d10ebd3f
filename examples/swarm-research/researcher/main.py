"""Researcher: answer one sub-question from corpus.json (the passage sharing the most words with it).
Input: {"question": "..."}; output: {"question", "answer", "source"}."""
import json
import os
import re

import aegis

words = lambda text: set(re.findall(r"[a-z]{3,}", text.lower()))  # noqa: E731
question = (aegis.input() or {}).get("question", "")
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus.json")) as f:
    corpus = json.load(f)
best = max(corpus, key=lambda doc: len(words(question) & words(doc["title"] + " " + doc["text"])))
score = len(words(question) & words(best["title"] + " " + best["text"]))
aegis.output({"question": question, "answer": best["text"] if score else None, "source": best["title"] if score else None})
