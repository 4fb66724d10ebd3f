"""web-researcher: answers a question from web pages on allowed hosts.

Every page is fetched with the `http.fetch` tool through the AEGIS tool gateway (aegis.tools.call): the agent never
opens a socket itself. The gateway checks the URL against spec.security.network.allow, the fetch runs inside the
sandbox through its egress proxy, and every call is a `tool.call` ledger entry (the connection a `network.connect`
one). Links found on a page are followed (breadth first, up to MAX_PAGES pages); a host the policy refuses is
reported under "refused", not fetched. The pages' text then goes to the model (aegis.llm.chat, through the LLM
gateway under spec.llm's budget) for a summary that cites its sources.

Built-in tools need a live sandbox:  aegis sandbox create web-researcher
                                     aegis sandbox exec <id> -- python3 /agent/main.py '{"question": …, "urls": […]}'
Standard library and the in-sandbox SDK only (no pip).
"""

import html
import json
import os
import re
import sys
from urllib.parse import urldefrag, urljoin, urlparse

import aegis

MAX_PAGES = int(os.environ.get("MAX_PAGES", "4"))
MAX_CHARS_PER_PAGE = int(os.environ.get("MAX_CHARS_PER_PAGE", "4000"))
MODEL = os.environ.get("MODEL", "default")

SYSTEM = (
    "You are a careful research assistant. Answer the question using only the numbered sources given. "
    "Cite sources as [1], [2]. If the sources do not answer the question, say so."
)


def read_request():
    """{question, urls}: from the first argument (a live sandbox), else the execution's input."""
    if len(sys.argv) > 1:
        value = json.loads(sys.argv[1])
    else:
        value = aegis.input()
    if not isinstance(value, dict) or not value.get("urls"):
        raise SystemExit('input: {"question": "...", "urls": ["https://allowed.host/page", ...]}')
    return value


def text_of(page):
    page = re.sub(r"(?is)<(script|style|noscript)\b.*?</\1>", " ", page)
    page = re.sub(r"(?s)<[^>]+>", " ", page)
    return re.sub(r"\s+", " ", html.unescape(page)).strip()


def title_of(page):
    match = re.search(r"(?is)<title[^>]*>(.*?)</title>", page)
    return re.sub(r"\s+", " ", html.unescape(match.group(1))).strip() if match else ""


def links_of(base, page):
    for href in re.findall(r"""(?i)<a\s[^>]*href\s*=\s*["']([^"']+)["']""", page):
        url = urldefrag(urljoin(base, href))[0]
        if urlparse(url).scheme in ("http", "https"):
            yield url


def research(question, urls):
    queue, seen, pages, refused = list(urls), set(), [], []
    while queue and len(pages) < MAX_PAGES:
        url = queue.pop(0)
        if url in seen:
            continue
        seen.add(url)
        try:
            fetched = aegis.tools.call("http.fetch", {"url": url})
        except aegis.ToolDenied as denied:  # the policy said no: report it, do not retry
            refused.append({"url": url, "reason": str(denied)})
            continue
        except aegis.AegisError as error:
            if error.code == "RUNTIME_UNAVAILABLE":
                raise SystemExit(f"http.fetch needs a live sandbox: {error}")
            refused.append({"url": url, "reason": str(error)})
            continue
        if fetched.get("status") != 200:
            refused.append({"url": url, "reason": f"HTTP {fetched.get('status')}"})
            continue
        body = fetched.get("body") or ""
        pages.append({"url": url, "title": title_of(body), "text": text_of(body)[:MAX_CHARS_PER_PAGE]})
        queue.extend(link for link in links_of(url, body) if link not in seen)
    if not pages:
        return {"question": question, "summary": None, "sources": [], "refused": refused}
    sources = "\n\n".join(
        f"[{i}] {page['title'] or page['url']} ({page['url']})\n{page['text']}" for i, page in enumerate(pages, 1)
    )
    reply = aegis.llm.chat(
        [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"Question: {question}\n\nSources:\n\n{sources}"},
        ],
        model=MODEL,
    )
    return {
        "question": question,
        "summary": reply["content"],
        "sources": [{"n": i, "url": page["url"], "title": page["title"]} for i, page in enumerate(pages, 1)],
        "refused": refused,
    }


def main():
    request = read_request()
    result = research(request.get("question") or "Summarise these pages.", request["urls"])
    print(json.dumps(result))
    try:
        aegis.output(result)
    except OSError:
        pass  # a live sandbox has no execution output file: stdout carries the result


if __name__ == "__main__":
    main()
