"""The Lua scripts name their inputs and take every key from outside, so each touches one Cluster slot."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from runner.broker import lua

SCRIPTS = sorted(p.name.removesuffix(".lua") for p in resources.files("runner.broker").joinpath("lua").iterdir())


def test_every_script_is_loaded_by_name():
    assert {"claim", "enqueue", "finish", "release", "release_dead", "renew", "withdraw", "claim_one"} <= set(SCRIPTS)
    assert all(lua.source(name) for name in SCRIPTS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_the_header_names_every_input_and_the_first_lines_unpack_them(name: str):
    text = lua.source(name)
    header = [line for line in text.splitlines() if line.startswith("--")]
    body = "\n".join(line for line in text.splitlines() if not line.startswith("--"))
    used = set(re.findall(r"\b(KEYS|ARGV)\[(\d+)\]", body))
    documented = {(kind, n) for kind, n in (re.match(r"-- (KEYS|ARGV)\[(\d+)\]", h).groups()  # type: ignore[union-attr]
                                             for h in header if re.match(r"-- (KEYS|ARGV)\[\d+\]", h))}  # fmt: skip
    assert used <= documented, f"{name}.lua uses {sorted(used - documented)} without naming them in its header"
    first_code = body.strip().split("\n\n", 1)[0]
    rest = body.strip().split("\n\n", 1)[1] if "\n\n" in body.strip() else ""
    variadic_removed = re.sub(r"ARGV\[i( \+ \d)?\]", "", rest)  # a tail of per-job entries, read in a loop
    assert "KEYS[" not in rest and "ARGV[" not in variadic_removed, (
        f"{name}.lua must unpack KEYS and ARGV into named locals on its first lines: {first_code!r}"
    )


@pytest.mark.parametrize("name", SCRIPTS)
def test_no_key_name_is_a_literal_inside_a_script(name: str):
    """Quoted strings may be commands and arguments, never key names (those have a ':' in this runner)."""
    body = "\n".join(line for line in lua.source(name).splitlines() if not line.startswith("--"))
    literals = re.findall(r"'([^']*)'", body)
    key_like = [s for s in literals if ":" in s and not re.fullmatch(r"\^?\(%d\+\)[:|]\(\.\*\)\$", s)]
    assert key_like == [], f"{name}.lua has key-like literals {key_like}; pass keys in KEYS or prefixes in ARGV"
