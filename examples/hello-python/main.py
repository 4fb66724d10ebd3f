"""hello-python: the smallest AEGIS agent.

Reads its input (JSON on stdin, also at /run/aegis/input.json), prints a greeting, and prints its result as the
last line of stdout, which AEGIS takes as the output when /run/aegis/output.json was not written.

Outside a sandbox:  echo '{"name": "Ada"}' | python3 main.py
"""

import json
import os
import platform
import sys


def read_input():
    """The task input as a dict. `{}`, `null` or no input at all mean "use the defaults"."""
    text = sys.stdin.read() if sys.stdin is not None and not sys.stdin.isatty() else ""
    if not text.strip():
        try:
            with open(os.environ.get("AEGIS_INPUT", "/run/aegis/input.json"), encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            text = ""
    value = json.loads(text) if text.strip() else None
    return value if isinstance(value, dict) else {}


def main():
    name = read_input().get("name") or "world"
    greeting = f"Hello, {name}!"
    print(f"{greeting} (agent {os.environ.get('AEGIS_AGENT_NAME', 'hello-python')}, "
          f"execution {os.environ.get('AEGIS_EXECUTION_ID', 'local')})")
    result = {
        "greeting": greeting,
        "python": platform.python_version(),
        "uid": os.getuid(),
        "cwd": os.getcwd(),
    }
    print(json.dumps(result))  # the last stdout line is the output


if __name__ == "__main__":
    main()
