"""Coordinator: split the question, spawn one researcher per part (no more authority than this agent holds),
collect their answers over the swarm bus (topic "answers", deduplicated by message id), and write the merged
answer under the swarm lock "merged-answer" (published on topic "merged" with the lease's fencing token, after
checking the token is still current). Input: {"question": "..."}; output: {"question", "answer", "parts", "lock"}."""
import re
import time

import aegis

question = (aegis.input() or {}).get("question", "")
# One sub-question per clause: "What causes tides and what are neap tides?" -> two researchers.
parts = [p.strip(" ?.") for p in re.split(r"\band\b|[?;]", question, flags=re.I) if p.strip(" ?.")][:4]
children = [aegis.swarm.spawn("swarm-researcher", {"question": p}, wait=False) for p in parts]
ids = [c["id"] for c in children]
aegis.log("spawned", ids)

# Collect over the bus: at-least-once delivery, so keep the cursor and drop message ids already seen. A child that
# ended without publishing (it failed) is noticed through aegis.swarm.child and not waited for.
deadline = time.time() + 120
answers, ended, seen_ids, cursor = {}, {}, set(), 0
while len(answers) + len(ended) < len(ids) and time.time() < deadline:
    got = aegis.swarm.subscribe("answers", after=cursor, timeout=5)
    cursor = got.get("cursor") or cursor
    for m in got["messages"]:
        cursor = max(cursor, m["id"])
        if m["id"] in seen_ids or m["sender"] not in ids:
            continue
        seen_ids.add(m["id"])
        answers[m["sender"]] = m["message"]
    if not got["messages"]:
        for i in ids:
            if i not in answers and i not in ended:
                seen = aegis.swarm.child(i)
                if seen["done"] and seen["status"] != "succeeded":
                    ended[i] = seen

found = []
for i, part in zip(ids, parts):
    if i in answers:
        found.append({"question": part, "answer": answers[i].get("answer"), "status": "succeeded"})
    elif i in ended:
        found.append({"question": part, "answer": None, "status": ended[i]["status"], "reason": ended[i]["reason"]})
    else:
        found.append({"question": part, "answer": None, "status": "unfinished"})
answer = " ".join(f["answer"] for f in found if f["answer"]) or "no researcher found an answer"

# Write the merged answer under the lock: a writer whose lease expired meanwhile would find its token stale.
with aegis.swarm.lock("merged-answer", ttl=30, wait=30) as lease:
    fence = aegis.swarm.check_fence("merged-answer", lease.token)
    if not fence["valid"]:
        raise RuntimeError(f"lost the merged-answer lock (token {lease.token}, current {fence['current']})")
    written = aegis.swarm.publish("merged", {"answer": answer, "token": lease.token})
aegis.output({"question": question, "answer": answer, "parts": found,
              "lock": {"name": "merged-answer", "token": lease.token, "message": written}})
