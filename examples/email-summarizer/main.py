"""email-summarizer: reads a mailbox of .eml files and writes a short digest (deterministic rules; a model optional).

Runs inside the AEGIS sandbox with the Python standard library only. What the agent can see:

  /agent                   this directory, read-only (also the working directory)
  /data/mailbox            the mailbox, mounted read-only because agent.yaml grants it
  /run/aegis/input.json    the task input (also on stdin); `{}` or `null` when none was given
  /run/aegis/output.json   where the result goes

Input (every key optional):
  {"mailbox": "/data/mailbox", "max_items": 10, "since": "2025-03-12"}

To try it outside a sandbox, point the contract paths somewhere else:
  AEGIS_INPUT=/tmp/in.json AEGIS_OUTPUT=/tmp/out.json MAILBOX_DIR=mailbox python3 main.py
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import json
import os
import re
import sys
from collections import Counter
from datetime import datetime, timezone
from html.parser import HTMLParser

INPUT_PATH = os.environ.get("AEGIS_INPUT", "/run/aegis/input.json")
OUTPUT_PATH = os.environ.get("AEGIS_OUTPUT", "/run/aegis/output.json")
DEFAULT_MAILBOX = os.environ.get("MAILBOX_DIR", "/data/mailbox")
DEFAULT_MAX_ITEMS = 10
MAX_MESSAGE_BYTES = 5 * 1024 * 1024  # the sandbox has 128Mi of memory; skip anything absurdly large

# --------------------------------------------------------------------------------------------------------------
# Heuristics. Plain word lists, so the result is the same on every run and easy to reason about.

# (pattern, label used in the "why" text). Matched case-insensitively on whole words.
URGENT_TERMS = [
    (r"urgent(?:ly)?", "urgent"),
    (r"asap", "ASAP"),
    (r"outage", "outage"),
    (r"(?:is|are) down|went down", "something is down"),
    (r"overdue|past due", "overdue"),
    (r"final notice", "final notice"),
    (r"security alert", "security alert"),
    (r"(?:suspicious|new|unrecognized) sign-?in", "unexpected sign-in"),
    (r"(?:deadline|due|closes?) today", "deadline today"),
    (r"action required", "action required"),
    (r"immediately", "immediately"),
    (r"sev ?[01]|p0|incident", "incident"),
    (r"dringend", "dringend (urgent)"),
]
URGENT_RE = [(re.compile(r"\b(?:" + pattern + r")\b", re.IGNORECASE), label) for pattern, label in URGENT_TERMS]
# "not urgent", "no rush" and friends cancel a body match.
NEGATED_RE = re.compile(r"\b(?:not|nothing|no longer)\s+(?:urgent|critical)\b|\bno rush\b", re.IGNORECASE)

# Sentences that ask the reader to do something.
REQUEST_RE = re.compile(
    r"\bplease\b|\b(?:can|could|would|will) you\b|\blet me know\b|\baction required\b|\bwe need (?:you|someone)\b"
    r"|\bmake sure\b|\bbitte\b|\bmerci de\b|\bpor favor\b",
    re.IGNORECASE,
)
WEEKDAYS = (
    r"monday|tuesday|wednesday|thursday|friday|saturday|sunday"
    r"|montag|dienstag|mittwoch|donnerstag|freitag|samstag|sonntag"
)
MONTHS = r"january|february|march|april|may|june|july|august|september|october|november|december"
MONTH_NAMES = MONTHS.title().split("|")
DUE_RE = re.compile(
    r"\b(?:by|before|until|bis|due)\s+("
    r"(?:today|tonight|tomorrow|end of (?:the )?day|eod|(?:this |next )?(?:" + WEEKDAYS + r"))"
    r"(?:,?\s+\d{1,2}(?:st|nd|rd|th|\.)?\s+(?:" + MONTHS + r"))?"
    r"(?:\s+at\s+\d{1,2}[:.]\d{2})?"
    r")(?:'s)?\b",
    re.IGNORECASE,
)
TODAY_AT_RE = re.compile(r"\btoday at \d{1,2}[:.]\d{2}(?:\s*[A-Z]{2,4}\b)?", re.IGNORECASE)
# In urgent mail, "reset your password immediately" is a request even without a "please".
RIGHT_NOW_RE = re.compile(r"\b(?:asap|as soon as possible|immediately|right away|sofort)\b", re.IGNORECASE)


def log(message: str) -> None:
    """Progress for humans; AEGIS streams stderr to the terminal and keeps it in the execution log."""
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------------------
# Input and output


class InputError(Exception):
    pass


def read_input() -> dict:
    """The task input: /run/aegis/input.json, else stdin. `{}`/`null`/nothing all mean "use the defaults"."""
    text = ""
    try:
        with open(INPUT_PATH, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        if sys.stdin is not None and not sys.stdin.isatty():
            text = sys.stdin.read()
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"input is not valid JSON: {error}") from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError(f"input must be a JSON object, got {type(value).__name__}")
    return value


def parse_options(raw: dict) -> dict:
    mailbox = raw.get("mailbox", DEFAULT_MAILBOX)
    if not isinstance(mailbox, str) or not mailbox:
        raise InputError('"mailbox" must be a path (string)')
    max_items = raw.get("max_items", DEFAULT_MAX_ITEMS)
    if isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 0:
        raise InputError('"max_items" must be a non-negative integer')
    since = raw.get("since")
    if since is not None:
        if not isinstance(since, str):
            raise InputError('"since" must be an ISO 8601 date such as "2025-03-12"')
        try:
            since = datetime.fromisoformat(since)
        except ValueError:
            raise InputError(f'"since" is not an ISO 8601 date: {raw["since"]!r}') from None
        if since.tzinfo is None:
            since = since.replace(tzinfo=timezone.utc)
    return {"mailbox": mailbox, "max_items": max_items, "since": since}


def write_output(result: dict) -> None:
    """Writes output.json; if that is impossible (outside a sandbox), prints the JSON as the last stdout line."""
    text = json.dumps(result, ensure_ascii=False, indent=2)
    try:
        with open(OUTPUT_PATH, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    except OSError as error:
        log(f"cannot write {OUTPUT_PATH} ({error.strerror}); printing the result instead")
        print(json.dumps(result, ensure_ascii=False))


# --------------------------------------------------------------------------------------------------------------
# Parsing


class _TextFromHtml(HTMLParser):
    """Just enough HTML-to-text for mail bodies: drops tags, style and script, keeps paragraph breaks."""

    BLOCK = {"p", "br", "div", "li", "tr", "h1", "h2", "h3", "h4", "table", "ul", "ol"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("style", "script", "head"):
            self.skip += 1
        elif tag in self.BLOCK:
            self.parts.append("\n\n" if tag not in ("br", "li", "tr") else "\n")

    def handle_endtag(self, tag):
        if tag in ("style", "script", "head") and self.skip:
            self.skip -= 1
        elif tag in self.BLOCK:
            self.parts.append("\n\n")

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    parser = _TextFromHtml()
    parser.feed(html)
    parser.close()
    text = "".join(parser.parts)
    text = re.sub(r"[ \t\r\f\v]+", " ", text)
    return re.sub(r"\n\s*\n\s*", "\n\n", text).strip()


def body_text(msg) -> str:
    """The readable body: text/plain if there is one, else text/html converted to text."""
    part = msg.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    try:
        content = part.get_content()  # undoes quoted-printable/base64 and decodes the charset
    except (LookupError, UnicodeError, AssertionError):
        payload = part.get_payload(decode=True) or b""
        content = payload.decode("utf-8", errors="replace")
    if not isinstance(content, str):
        return ""
    if part.get_content_subtype() == "html":
        return html_to_text(content)
    return content


def own_words(body: str) -> str:
    """The part of the body the sender wrote: no quoted reply, no signature."""
    kept = []
    for line in body.splitlines():
        stripped = line.strip()
        if stripped in ("--", "-- ") or stripped.startswith("-----Original Message"):
            break
        if re.match(r"^On .{5,200} wrote:$", stripped) or re.match(r"^Am .{5,200} schrieb .*:$", stripped):
            break
        if stripped.startswith(">"):
            continue
        kept.append(line)
    return "\n".join(kept).strip()


def sentences(text: str) -> list[str]:
    out = []
    for paragraph in re.split(r"\n\s*\n", text):
        flat = " ".join(paragraph.split())
        out.extend(s for s in re.split(r"(?<=[.!?])\s+(?=[A-Z0-9\"'ÄÖÜÉ])", flat) if s)
    return out


def format_address(name: str, addr: str) -> str:
    if name and addr:
        return f"{name} <{addr}>"
    return name or addr or "(unknown sender)"


def header_text(msg, name: str) -> str:
    try:
        value = msg[name]
    except Exception:  # a header too broken to parse
        return ""
    return " ".join(str(value).split()) if value is not None else ""


def sender_of(msg) -> tuple[str, str]:
    """(display name, address). Display names in encoded words (=?UTF-8?Q?...?=) come back decoded."""
    try:
        header = msg["From"]
        if header is not None and header.addresses:
            first = header.addresses[0]
            return first.display_name or "", first.addr_spec or ""
    except Exception:
        pass
    name, addr = email.utils.parseaddr(header_text(msg, "From"))
    return name, addr


def date_of(msg) -> datetime | None:
    try:
        header = msg["Date"]
        when = header.datetime if header is not None else None
    except Exception:
        when = None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when


def is_bulk(msg) -> bool:
    """Newsletters and marketing announce themselves with list headers or Precedence: bulk."""
    if msg.get("List-Unsubscribe") or msg.get("List-Id"):
        return True
    return header_text(msg, "Precedence").lower() in ("bulk", "list", "junk")


def unsubscribe_link(msg) -> str | None:
    links = re.findall(r"<([^>]+)>", header_text(msg, "List-Unsubscribe"))
    web = [link for link in links if link.startswith("https://")]
    return (web or links or [None])[0]


def priority_flag(msg) -> str | None:
    importance = header_text(msg, "Importance").lower()
    priority = header_text(msg, "X-Priority")
    if importance == "high" or priority[:1] in ("1", "2") or header_text(msg, "Priority").lower() == "urgent":
        return "marked high priority"
    return None


def urgency(msg, subject: str, body: str) -> tuple[int, list[str]]:
    """(score, reasons). Header flag or a subject term scores 2, each distinct body term 1; urgent from 2 up."""
    score, reasons = 0, []
    flag = priority_flag(msg)
    if flag:
        score += 2
        reasons.append(flag)
    in_subject = []
    for regex, label in URGENT_RE:
        if regex.search(subject) and label not in in_subject:
            in_subject.append(label)
    if in_subject:
        score += 2 * len(in_subject)
        reasons.append("subject says " + ", ".join(f'"{label}"' for label in in_subject))
    in_body = []
    for sentence in sentences(body):
        if NEGATED_RE.search(sentence):
            continue
        for regex, label in URGENT_RE:
            if regex.search(sentence) and label not in in_subject and label not in in_body:
                in_body.append(label)
    if in_body:
        score += len(in_body)
        reasons.append("body mentions " + ", ".join(f'"{label}"' for label in in_body))
    return score, reasons


def shorten(text: str, limit: int = 180) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def due_in(text: str) -> str | None:
    match = DUE_RE.search(text)
    if match:
        return match.group(1)
    match = TODAY_AT_RE.search(text) or RIGHT_NOW_RE.search(text)
    return match.group(0) if match else None


def action_item_of(subject: str, body: str, urgent: bool) -> dict | None:
    """The first sentence that asks the reader to do something, with a due date if the mail gives one."""
    for sentence in sentences(body):
        if REQUEST_RE.search(sentence) or (urgent and RIGHT_NOW_RE.search(sentence)):
            item = {"task": shorten(sentence)}
            # A deadline stated elsewhere in the mail ("close today at 17:00") applies to the request too.
            due = due_in(sentence) or due_in(subject) or due_in(body)
            if due:
                item["due"] = due
            return item
    return None


def load_message(path: str) -> dict:
    """Parses one .eml into the facts the digest needs. Raises ValueError for files that are not mail."""
    size = os.path.getsize(path)
    if size == 0:
        raise ValueError("empty file")
    if size > MAX_MESSAGE_BYTES:
        raise ValueError(f"larger than {MAX_MESSAGE_BYTES // (1024 * 1024)} MiB")
    with open(path, "rb") as f:
        msg = email.message_from_binary_file(f, policy=email.policy.default)
    if not any(msg.get(h) for h in ("From", "Subject", "Date", "Message-ID")):
        raise ValueError("no mail headers (From, Subject, Date or Message-ID)")
    name, addr = sender_of(msg)
    subject = header_text(msg, "Subject") or "(no subject)"
    body = own_words(body_text(msg))
    bulk = is_bulk(msg)
    score, reasons = (0, []) if bulk else urgency(msg, subject, body)
    return {
        "file": os.path.basename(path),
        "name": name,
        "addr": addr.lower(),
        "from": format_address(name, addr),
        "subject": subject,
        "date": date_of(msg),
        "bulk": bulk,
        "unsubscribe": unsubscribe_link(msg) if bulk else None,
        "urgency": score,
        "reasons": reasons,
        "action": None if bulk else action_item_of(subject, body, urgent=score >= 2),
    }


def read_mailbox(directory: str) -> tuple[list[dict], list[dict]]:
    names = sorted(e.name for e in os.scandir(directory) if e.is_file() and e.name.lower().endswith(".eml"))
    messages, skipped = [], []
    for name in names:
        try:
            messages.append(load_message(os.path.join(directory, name)))
        except Exception as error:  # one bad file must not sink the whole digest
            skipped.append({"file": name, "reason": str(error) or type(error).__name__})
            log(f"skipping {name}: {skipped[-1]['reason']}")
    return messages, skipped


# --------------------------------------------------------------------------------------------------------------
# The digest


def iso(when: datetime | None) -> str | None:
    return when.isoformat() if when else None


def by_date_desc(message: dict) -> tuple:
    when = message["date"]
    return (when is None, -(when.timestamp() if when else 0), message["file"])


def short_name(message: dict) -> str:
    return message["name"] or message["addr"] or "an unknown sender"


def join_words(words: list[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def day_span(messages: list[dict]) -> str | None:
    dates = sorted(m["date"] for m in messages if m["date"])
    if not dates:
        return None
    first, last = dates[0], dates[-1]

    def fmt(d: datetime, year: bool) -> str:  # month names spelled out here: strftime depends on the locale
        return f"{d.day} {MONTH_NAMES[d.month - 1]}" + (f" {d.year}" if year else "")

    if first.date() == last.date():
        return f"on {fmt(first, True)}"
    return f"between {fmt(first, first.year != last.year)} and {fmt(last, True)}"


def build_summary(messages, urgent, bulk, actions, skipped) -> str:
    if not messages:
        text = "The mailbox holds no messages."
        if skipped:
            text += f" {plural(len(skipped), 'file')} could not be read as email."
        return text
    senders = {m["addr"] or m["name"] for m in messages}
    span = day_span(messages)
    parts = [
        f"{plural(len(messages), 'message')} from {plural(len(senders), 'sender')}" + (f" {span}." if span else ".")
    ]
    if urgent:
        shown = urgent[:5]
        described = [f"\u201c{m['subject']}\u201d from {short_name(m)}" for m in shown]
        if len(urgent) > len(shown):
            described.append(f"{len(urgent) - len(shown)} more")
        lead = "1 needs attention now: " if len(urgent) == 1 else f"{len(urgent)} need attention now: "
        listed = described[0] if len(described) == 1 else "; ".join(described[:-1]) + "; and " + described[-1]
        parts.append(lead + listed + ".")
    else:
        parts.append("Nothing looks urgent.")
    if bulk:
        names = join_words(sorted({short_name(m) for m in bulk}))
        parts.append(f"{plural(len(bulk), 'is a newsletter or promotion', 'are newsletters or promotions')} ({names}).")
    if actions:
        dated = sum(1 for a in actions if a.get("due"))
        line = "1 message asks you to do something" if len(actions) == 1 else (
            f"{len(actions)} messages ask you to do something"
        )
        parts.append(line + (f", {dated} with a due date." if dated else "."))
    if skipped:
        verb = "was" if len(skipped) == 1 else "were"
        parts.append(f"{plural(len(skipped), 'file')} could not be read as email and {verb} skipped.")
    return " ".join(parts)


def deterministic_digest(messages: list[dict], skipped: list[dict], max_items: int) -> dict:
    urgent = sorted((m for m in messages if m["urgency"] >= 2), key=lambda m: (-m["urgency"], by_date_desc(m)))
    bulk = sorted((m for m in messages if m["bulk"]), key=by_date_desc)
    # Requests in the order of the urgent list first, then the newest.
    actions = [
        {**m["action"], "from": short_name(m), "subject": m["subject"]}
        for m in sorted(messages, key=lambda m: (m["urgency"] < 2, -m["urgency"], by_date_desc(m)))
        if m["action"]
    ]

    senders = Counter(m["from"] for m in messages)
    dates = sorted(m["date"] for m in messages if m["date"])
    return {
        "summary": build_summary(messages, urgent, bulk, actions, skipped),
        "total": len(messages),
        "period": {"first": iso(dates[0]), "last": iso(dates[-1])} if dates else None,
        "counts": {
            "urgent": len(urgent),
            "newsletters": len(bulk),
            "action_items": len(actions),
            "other": sum(1 for m in messages if not m["bulk"] and m["urgency"] < 2),
        },
        "urgent": [
            {"from": m["from"], "subject": m["subject"], "date": iso(m["date"]), "why": "; ".join(m["reasons"])}
            for m in urgent[:max_items]
        ],
        "newsletters": [
            {"from": m["from"], "subject": m["subject"], "date": iso(m["date"]), "unsubscribe": m["unsubscribe"]}
            for m in bulk[:max_items]
        ],
        "action_items": actions[:max_items],
        "by_sender": dict(sorted(senders.items(), key=lambda kv: (-kv[1], kv[0].lower()))),
        "skipped": len(skipped),
        "skipped_files": skipped,
    }


# --------------------------------------------------------------------------------------------------------------
# LLM summary (optional)

MAX_PROMPT_MESSAGES = 40  # the prompt lists at most this many messages, newest first


def llm_prompt(messages: list[dict], digest: dict) -> list[dict]:
    """The chat messages for the model: the facts the rules found, one line per mail (no bodies)."""
    lines = []
    for m in sorted(messages, key=by_date_desc)[:MAX_PROMPT_MESSAGES]:
        flags = (["URGENT: " + "; ".join(m["reasons"])] if m["urgency"] >= 2 else []) + (
            ["newsletter"] if m["bulk"] else []
        )
        action = f" asks: {m['action']['task']}" if m["action"] else ""
        lines.append(f"- {iso(m['date']) or 'undated'} from {short_name(m)}: {m['subject']}"
                     + (f" [{', '.join(flags)}]" if flags else "") + action)
    return [
        {
            "role": "system",
            "content": "You summarise a mailbox for its owner in two or three plain sentences: what is urgent, "
            "what they are asked to do, and what can wait. Use only the facts given.",
        },
        {"role": "user", "content": "Mailbox:\n" + "\n".join(lines) + "\n\nRule-based summary: " + digest["summary"]},
    ]


def llm_summarize(messages: list[dict], digest: dict) -> str | None:
    """A few sentences from the model, or None to keep the deterministic summary.

    Used only when AEGIS runs this agent with a model granted (agent-llm.yaml, `spec.llm`): then AEGIS_API_URL
    points at the in-sandbox gateway and the `aegis` SDK (mounted read-only, standard library only) is importable.
    The provider's key never enters the sandbox. Any failure — no model configured, budget used up, upstream
    down — is logged and the deterministic summary stands, so the digest is always produced.
    """
    if not os.environ.get("AEGIS_API_URL") or not messages:
        return None
    try:
        import aegis  # the in-sandbox SDK; only present inside AEGIS

        answer = aegis.llm.chat(llm_prompt(messages, digest), model="default", max_tokens=300)
        text = (answer.get("content") or "").strip()
        return text or None
    except Exception as error:  # noqa: BLE001 - any failure means "use the rules"
        log(f"the model did not answer ({type(error).__name__}: {error}); using the deterministic summary")
        return None


def summarize(messages: list[dict], skipped: list[dict], max_items: int) -> dict:
    digest = deterministic_digest(messages, skipped, max_items)
    digest["summarizer"] = "deterministic"
    text = llm_summarize(messages, digest)
    if text:
        digest["rule_summary"] = digest["summary"]
        digest["summary"], digest["summarizer"] = text, "llm"
    return digest


# --------------------------------------------------------------------------------------------------------------


def main() -> int:
    try:
        options = parse_options(read_input())
    except InputError as error:
        log(f"error: {error}")
        write_output({"error": str(error)})
        return 2

    mailbox = options["mailbox"]
    if not os.path.isdir(mailbox):
        message = f"mailbox {mailbox} is not a directory the agent can read"
        log(f"error: {message}")
        write_output({
            "error": message,
            "hint": "grant it in agent.yaml under spec.security.filesystem.read, e.g. "
            "{source: mailbox, target: /data/mailbox}",
        })
        return 1

    messages, skipped = read_mailbox(mailbox)
    log(f"read {plural(len(messages), 'message')} from {mailbox}" + (f" ({len(skipped)} skipped)" if skipped else ""))

    since = options["since"]
    if since is not None:
        before = len(messages)
        # Messages without a usable Date header are kept: dropping mail silently is worse than one extra line.
        messages = [m for m in messages if m["date"] is None or m["date"] >= since]
        log(f"kept {len(messages)} of {before} dated {since.date().isoformat()} or later")

    result = summarize(messages, skipped, options["max_items"])
    result["mailbox"] = mailbox
    if since is not None:
        result["since"] = since.isoformat()
    counts = result["counts"]
    log(f"{counts['urgent']} urgent, {counts['newsletters']} newsletters, {counts['action_items']} action items")
    write_output(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
