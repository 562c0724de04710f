#!/usr/bin/env python3
"""Checks the relative links of the project's Markdown documentation.

    links_test.py SOURCE_DIR

Reads README.md, docs/*.md, deploy/k8s/README.md and models/*/README.md under SOURCE_DIR.
Every relative link ([text](target), ![alt](target), and [ref]: target definitions) must
point at a file or folder that exists inside SOURCE_DIR, and every #anchor in it (or a
same-file #anchor) must name a heading of the target Markdown file, with GitHub's rules:
lower case, punctuation other than '-' and '_' dropped, spaces turned into '-', and a
repeated heading numbered -1, -2, ... Links with a scheme (http:, https:, mailto:, ...) and
links inside fenced code blocks or inline code are not checked.

Prints one line per broken link, FILE:LINE: ..., and exits 1 if there is any; 0 otherwise.
Python 3 standard library only.
"""

import glob
import os
import re
import sys
import urllib.parse

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
HTML_ID = re.compile(r"<a\s[^>]*?(?:name|id)\s*=\s*[\"']([^\"']+)[\"']", re.IGNORECASE)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
# ](target) or ](<target>), with an optional title; one level of parentheses in the target.
INLINE_LINK = re.compile(
    r"\]\(\s*(<[^>\n]*>|(?:[^\s()]|\([^\s()]*\))*)(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^)]*\)))?\s*\)")
REF_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>\n]*>|\S+)", re.MULTILINE)


def doc_files(root):
    files = [os.path.join(root, "README.md")]
    files += sorted(glob.glob(os.path.join(root, "docs", "*.md")))
    files.append(os.path.join(root, "deploy", "k8s", "README.md"))
    files += sorted(glob.glob(os.path.join(root, "models", "*", "README.md")))
    return [f for f in files if os.path.isfile(f)]


def prose_lines(text):
    """The file's lines with fenced code blocks blanked (line numbers are kept)."""
    out = []
    fence = None
    for line in text.split("\n"):
        m = FENCE.match(line)
        if fence is None and m:
            fence = m.group(1)
            out.append("")
        elif fence is not None:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and \
                    line.strip() == m.group(1):
                fence = None
            out.append("")
        else:
            out.append(line)
    return out


def blank_code_spans(text):
    """Replaces inline code spans and HTML comments by spaces, keeping offsets and newlines."""
    def spaces(m):
        return re.sub(r"[^\n]", " ", m.group(0))
    text = re.sub(r"<!--.*?-->", spaces, text, flags=re.DOTALL)
    # A code span: a run of backticks up to the same run, not across a blank line.
    return re.sub(r"(?<!`)(`+)(?!`)((?:(?!\n[ \t]*\n).)+?)(?<!`)\1(?!`)", spaces, text,
                  flags=re.DOTALL)


def heading_text_to_anchor(text):
    """GitHub's anchor for a heading's source text."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # links and images: their text
    text = re.sub(r"<[^>]+>", "", text)                      # HTML tags
    text = text.replace("`", "")
    text = re.sub(r"(\*+|(?<!\w)_+|_+(?!\w))", "", text)   # emphasis markers, not snake_case
    text = text.strip().lower()
    text = "".join(c for c in text if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


def anchors_of(path, cache={}):
    if path in cache:
        return cache[path]
    with open(path, encoding="utf-8") as f:
        lines = prose_lines(f.read())
    anchors = set()
    seen = {}

    def add(text):
        base = heading_text_to_anchor(text)
        n = seen.get(base, 0)
        seen[base] = n + 1
        anchors.add(base if n == 0 else "%s-%d" % (base, n))

    previous = ""
    for line in lines:
        m = ATX.match(line)
        if m:
            add(m.group(2) or "")
        elif SETEXT.match(line) and previous.strip() and not ATX.match(previous) and \
                not previous.lstrip().startswith(("|", "-", "*", "+", ">")):
            add(previous.strip())
        for a in HTML_ID.findall(line):
            anchors.add(a)
        previous = line
    cache[path] = anchors
    return anchors


def links_of(path):
    """(line number, target) for every link outside code."""
    with open(path, encoding="utf-8") as f:
        text = "\n".join(prose_lines(f.read()))
    text = blank_code_spans(text)
    found = []
    for regex in (INLINE_LINK, REF_DEF):
        for m in regex.finditer(text):
            target = m.group(1)
            if target.startswith("<") and target.endswith(">"):
                target = target[1:-1]
            line = text.count("\n", 0, m.start(1)) + 1
            found.append((line, target))
    return sorted(found)


def check(root):
    root = os.path.realpath(root)
    problems = []
    checked = 0
    files = doc_files(root)
    for source in files:
        rel_source = os.path.relpath(source, root)
        for line, target in links_of(source):
            where = "%s:%d" % (rel_source, line)
            if not target:
                problems.append("%s: empty link target" % where)
                continue
            if SCHEME.match(target) or target.startswith("//"):
                continue  # http(s), mailto and other absolute URLs
            checked += 1
            path_part, _, anchor = target.partition("#")
            path_part = urllib.parse.unquote(path_part.split("?", 1)[0])
            anchor = urllib.parse.unquote(anchor)
            if path_part.startswith("/"):
                problems.append("%s: link '%s' is absolute; use a path relative to %s" %
                                (where, target, rel_source))
                continue
            if path_part:
                resolved = os.path.realpath(os.path.join(os.path.dirname(source), path_part))
            else:
                resolved = source
            if os.path.commonpath([root, resolved]) != root:
                problems.append("%s: link '%s' leaves the repository" % (where, target))
                continue
            if not os.path.exists(resolved):
                problems.append("%s: link '%s': %s does not exist" %
                                (where, target, os.path.relpath(resolved, root)))
                continue
            if anchor and resolved.lower().endswith((".md", ".markdown")) and \
                    os.path.isfile(resolved):
                anchors = anchors_of(resolved)
                if anchor not in anchors:
                    hint = ""
                    near = [a for a in sorted(anchors) if anchor.lower().strip("-") in a]
                    if near:
                        hint = " (headings there: %s)" % ", ".join("#" + a for a in near[:3])
                    problems.append("%s: link '%s': %s has no heading for #%s%s" %
                                    (where, target, os.path.relpath(resolved, root), anchor,
                                     hint))
    return files, checked, problems


def main(argv):
    if len(argv) != 2:
        sys.stderr.write("usage: links_test.py SOURCE_DIR\n")
        return 2
    root = argv[1]
    if not os.path.isfile(os.path.join(root, "README.md")):
        sys.stderr.write("links_test.py: %s has no README.md\n" % root)
        return 2
    files, checked, problems = check(root)
    for p in problems:
        print(p)
    print("%d relative links in %d files checked: %s" %
          (checked, len(files), "%d broken" % len(problems) if problems else "all good"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
