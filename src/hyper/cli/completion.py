"""``hyper completion bash``: a completion script made from the parser itself, so it never
drifts from the verbs and flags that exist. Install: ``hyper completion bash >
/etc/bash_completion.d/hyper``."""

from __future__ import annotations

import argparse


def _words(parser: argparse.ArgumentParser) -> tuple[list[str], dict[str, argparse.ArgumentParser]]:
    flags: list[str] = []
    children: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            children.update(action.choices)
        else:
            flags.extend(action.option_strings)
    return flags, children


def bash(parser: argparse.ArgumentParser) -> str:
    cases = []

    def walk(path: str, node: argparse.ArgumentParser) -> None:
        flags, children = _words(node)
        words = " ".join([*children, *flags])
        cases.append(f'        "{path}") words="{words}" ;;')
        for name, child in children.items():
            walk(f"{path} {name}".strip(), child)

    walk("", parser)
    body = "\n".join(cases)
    return f"""_hyper() {{
    local cur path="" words="" i
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${{COMP_WORDS[i]}}" in -*) ;; *) path="${{path:+$path }}${{COMP_WORDS[i]}}" ;; esac
    done
    case "$path" in
{body}
        *) words="" ;;
    esac
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
}}
complete -o default -F _hyper hyper
"""
