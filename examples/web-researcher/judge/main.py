"""web-researcher-judge: scores a web-researcher answer, deterministically.

AEGIS runs it as the `judge` validator of web-researcher with the input {"output": <the researcher's output>,
"task": ..., "input": ...}. The score is 1 when the summary cites at least one source the researcher fetched
([n] with n one of its sources), else 0; the reason says why (AEGIS puts it in the failed execution's reason).
Output (the last stdout line): {"score": 0 or 1, "reason": "..."}.

Outside a sandbox:  echo '{"output": {"summary": "x [1]", "sources": [{"n": 1}]}}' | python3 main.py
"""

import json
import os
import re
import sys


def read_input():
    text = sys.stdin.read() if sys.stdin is not None and not sys.stdin.isatty() else ""
    if not text.strip():
        try:
            with open(os.environ.get("AEGIS_INPUT", "/run/aegis/input.json"), encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            text = ""
    value = json.loads(text) if text.strip() else None
    return value if isinstance(value, dict) else {}


def score(output):
    if not isinstance(output, dict):
        return 0, "the answer is not a web-researcher result ({summary, sources})"
    summary = output.get("summary")
    sources = output.get("sources") if isinstance(output.get("sources"), list) else []
    fetched = {source.get("n") for source in sources if isinstance(source, dict)}
    if not isinstance(summary, str) or not summary.strip():
        return 0, "no summary: no page could be fetched"
    if not fetched:
        return 0, "no source was fetched"
    cited = sorted({int(n) for n in re.findall(r"\[(\d+)\]", summary)} & fetched)
    if not cited:
        return 0, f"the summary cites none of the {len(fetched)} fetched source(s) ([1]..[{len(fetched)}])"
    return 1, f"cites source(s) {', '.join(f'[{n}]' for n in cited)}"


def main():
    value, reason = score(read_input().get("output"))
    print(json.dumps({"score": value, "reason": reason}))


if __name__ == "__main__":
    main()
