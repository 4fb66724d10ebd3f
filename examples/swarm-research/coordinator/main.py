"""Coordinator: split the question, spawn one researcher per part (no more authority than this agent holds),
wait for all of them, merge what they found. Input: {"question": "..."}; output: {"question", "answer", "parts"}."""
import re
import time

import aegis

question = (aegis.input() or {}).get("question", "")
# One sub-question per clause: "What causes tides and what are neap tides?" -> two researchers.
parts = [p.strip(" ?.") for p in re.split(r"\band\b|[?;]", question, flags=re.I) if p.strip(" ?.")][:4]
children = [aegis.swarm.spawn("swarm-researcher", {"question": p}, wait=False) for p in parts]
aegis.log("spawned", [c["id"] for c in children])

deadline = time.time() + 120
results = {}
while len(results) < len(children) and time.time() < deadline:
    for c in children:
        if c["id"] not in results:
            seen = aegis.swarm.child(c["id"])
            if seen["done"]:
                results[c["id"]] = seen
    time.sleep(0.5)

# TODO(issue 16 bus/locks, branch swarmbus): collect the answers over the swarm bus
# (aegis.swarm.subscribe("answers")) instead of polling children, and write the merged answer under
# aegis.swarm.lock("merged-answer") once the bus and locks are merged.
found = []
for c, part in zip(children, parts):
    r = results.get(c["id"])
    if r is None:
        found.append({"question": part, "answer": None, "status": "unfinished"})
    elif r["status"] != "succeeded":
        found.append({"question": part, "answer": None, "status": r["status"], "reason": r["reason"]})
    else:
        found.append({"question": part, "answer": (r["output"] or {}).get("answer"), "status": "succeeded"})
answer = " ".join(f["answer"] for f in found if f["answer"]) or "no researcher found an answer"
aegis.output({"question": question, "answer": answer, "parts": found})
