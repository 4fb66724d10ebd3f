"""Researcher: answer one sub-question from the corpus below (the passage sharing the most words with it) and
publish the answer on the swarm topic "answers" (spec.swarm: {} gives it the bus of its coordinator's swarm).
Input: {"question": "..."}; output: {"question", "answer", "source"} (also the published message)."""
import re

import aegis

words = lambda text: set(re.findall(r"[a-z]{3,}", text.lower()))  # noqa: E731
question = (aegis.input() or {}).get("question", "")
# A small local corpus (a real researcher would search documents or call http.fetch / the model).
corpus = [
    {"title": "Tides", "text": "Tides are caused by the gravity of the Moon and, less, the Sun."},
    {"title": "Neap tides", "text": "Neap tides are the weakest tides; they happen at quarter moons."},
    {"title": "Spring tides", "text": "Spring tides are the strongest tides; they happen when the Sun and Moon align."},
    {"title": "Photosynthesis", "text": "Plants turn light, water and carbon dioxide into sugar and oxygen."},
]
best = max(corpus, key=lambda doc: len(words(question) & words(doc["title"] + " " + doc["text"])))
score = len(words(question) & words(best["title"] + " " + best["text"]))
found = {"question": question, "answer": best["text"] if score else None, "source": best["title"] if score else None}
aegis.swarm.publish("answers", found)
aegis.output(found)
