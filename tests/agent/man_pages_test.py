#!/usr/bin/env python3
"""The man pages cannot drift from the programs.

Every flag that `tetherd --help`, `tetherctl --help` and each tetherctl command's
`--help` print, and every tetherctl command, must be in its man page (docs/man/*.scd,
on a definition line: one that starts with a bold term, as *--flag* or *command*); every agent.toml key that the config parser reads
(agent/config/agent_config.cpp: Set(t, "KEY", ...) in the function of each section) must
be under its section's heading in tether-agent.toml(5). Each problem is printed; the exit
status is 1 if there is any.

Usage: man_pages_test.py TETHERD TETHERCTL SOURCE_ROOT
"""
import re
import subprocess
import sys
from pathlib import Path

FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z-]*)")


def help_text(*argv: str) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)}: exit {result.returncode}: {result.stderr}")
    return result.stdout


def commands_of(text: str) -> list[str]:
    """The command names (and aliases) listed under Subcommands: in CLI11's help."""
    names, inside = [], False
    for line in text.splitlines():
        if line.strip().lower() == "subcommands:":
            inside = True
        elif inside and re.match(r"  \S", line):
            names += [name.strip() for name in line.split("  ")[1].split(",")]
        elif inside and line.strip() and not line.startswith(" "):
            inside = False
    return names


def config_keys(source: str) -> dict[str, list[str]]:
    """{section: [key, ...]} as agent_config.cpp reads them."""
    functions = dict(re.findall(r'Section\(top, "(\w+)", \[&\]\(TomlTable& t\) \{ (\w+)\(t\);', source))
    keys: dict[str, list[str]] = {}
    for section, function in functions.items():
        body = re.search(r"void " + function + r"\(TomlTable& t\) \{(.*?)\n  \}\n", source, re.S)
        if body is None:
            raise SystemExit(f"agent_config.cpp: no function {function} for [{section}]")
        keys[section] = sorted(set(re.findall(r'Set\(t, "(\w+)"', body.group(1))))
    return keys


def documented(word: str, text: str) -> bool:
    """Whether a definition line of the page (one that starts with a bold term) has *word*,
    not only a mention in running text."""
    return re.search(r"^(\*[^\n]*)?\*" + re.escape(word) + r"\*", text, re.M) is not None


def man_sections(page: str) -> dict[str, str]:
    """{heading: text} of a scdoc page's '# HEADING' sections."""
    sections: dict[str, str] = {}
    current = ""
    for line in page.splitlines():
        if line.startswith("# "):
            current = line[2:].strip()
            sections[current] = ""
        else:
            sections[current] = sections.get(current, "") + line + "\n"
    return sections


def main() -> int:
    tetherd, tetherctl, root = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    man = root / "docs" / "man"
    problems = []
    checked = 0

    def body(name: str) -> str:
        """A page without its SYNOPSIS: each flag must be explained, not only listed."""
        sections = man_sections((man / name).read_text())
        return "".join(text for heading, text in sections.items() if heading != "SYNOPSIS")

    page = body("tetherd.8.scd")
    for flag in sorted(set(FLAG.findall(help_text(tetherd, "--help")))):
        checked += 1
        if not documented(flag, page):
            problems.append(f"tetherd.8.scd: tetherd {flag} (in --help) is not documented")

    page = body("tetherctl.1.scd")
    top = help_text(tetherctl, "--help")
    commands = commands_of(top)
    if len(commands) < 10:
        problems.append(f"tetherctl --help: found only {commands} under SUBCOMMANDS:")
    flags = {(None, flag) for flag in FLAG.findall(top)}
    for command in commands:
        checked += 1
        if not documented(command, page):
            problems.append(f"tetherctl.1.scd: command '{command}' is not documented")
        flags |= {(command, flag) for flag in FLAG.findall(help_text(tetherctl, command, "--help") if command != "diff" else "")}
    for command, flag in sorted(flags, key=lambda item: (item[0] or "", item[1])):
        checked += 1
        if not documented(flag, page):
            where = f"tetherctl {command} {flag}" if command else f"tetherctl {flag}"
            problems.append(f"tetherctl.1.scd: {where} (in --help) is not documented")

    sections = man_sections((man / "tether-agent.toml.5.scd").read_text())
    keys = config_keys((root / "agent" / "config" / "agent_config.cpp").read_text())
    if len(keys) < 7:
        problems.append(f"agent_config.cpp: found only the sections {sorted(keys)}")
    for section, names in sorted(keys.items()):
        text = sections.get(f"[{section}]")
        if text is None:
            problems.append(f"tether-agent.toml.5.scd: no section '# [{section}]'")
            continue
        for name in names:
            checked += 1
            if not documented(name, text):
                problems.append(f"tether-agent.toml.5.scd: {section}.{name} is not under [{section}]")

    for problem in problems:
        print(problem)
    print(f"{checked} flags, commands and keys checked, {len(problems)} missing")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
