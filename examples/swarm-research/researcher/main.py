"""Researcher: answer one sub-question from the corpus below (the passage sharing the most words with it).
Input (stdin): {"question": "..."}; output (a JSON line on stdout): {"question", "answer", "source"}. It needs no
AEGIS API (no spec.llm, tools, memory or swarm), so it uses the plain agent contract, not the in-sandbox SDK."""
import json
import re
import sys

words = lambda text: set(re.findall(r"[a-z]{3,}", text.lower()))  # noqa: E731
question = (json.load(sys.stdin) or {}).get("question", "")
# A small local corpus (a real researcher would search documents or call http.fetch / the model).
corpus = [
    {"title": "Tides", "text": "Tides are caused by the gravity of the Moon and, less, the Sun."},
    {"title": "Neap tides", "text": "Neap tides are the weakest tides; they happen at quarter moons."},
    {"title": "Spring tides", "text": "Spring tides are the strongest tides; they happen when the Sun and Moon align."},
    {"title": "Photosynthesis", "text": "Plants turn light, water and carbon dioxide into sugar and oxygen."},
]
best = max(corpus, key=lambda doc: len(words(question) & words(doc["title"] + " " + doc["text"])))
score = len(words(question) & words(best["title"] + " " + best["text"]))
print(json.dumps({"question": question, "answer": best["text"] if score else None,
                  "source": best["title"] if score else None}))
