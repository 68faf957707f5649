"""Static checks of a stack of bundle configs, as ``monai.bundle run`` would parse it, without running it:

- every ``$`` expression compiles and names only what the stack itself imports (its ``$import ...`` items, which
  MONAI evaluates before anything else) plus MONAI's default expression globals and Python's builtins;
- the CUDA branch of ids such as ``device``, ``amp`` and ``initialize`` resolves on a machine without a GPU, with
  ``torch.cuda.is_available`` patched to True and ``LOCAL_RANK`` set (the test patches, then resolves the ids of
  :func:`parsed_stack`).

A name that only another config of the bundle happens to import (e.g. ``os``) evaluates on one stack and fails on
another, and a branch that only a GPU takes fails only on a GPU: both are invisible to a CPU run.
"""

from __future__ import annotations

import ast
import builtins
import symtable
from collections.abc import Iterator, Sequence
from pathlib import Path

from monai.bundle import ConfigExpression, ConfigParser
from monai.bundle.config_parser import _default_globals
from monai.bundle.reference_resolver import ReferenceResolver

__all__ = ["ExpressionProblem", "expression_problems", "free_names", "imported_names", "parsed_stack"]

LOCAL_REFS = "__local_refs"  # what MONAI replaces each ``@id`` reference by before evaluating


class ExpressionProblem(str):
    """One problem, as ``"<config id>: <what is wrong> in <expression>"``."""


def parsed_stack(config_files: Sequence[str | Path], overrides: dict | None = None) -> ConfigParser:
    """The stack parsed (macros and relative ids resolved, nothing instantiated or evaluated)."""
    parser = ConfigParser()
    parser.read_config([str(f) for f in config_files])
    parser.update(overrides or {})
    parser.parse(reset=True)
    return parser


def _expressions(parser: ConfigParser) -> Iterator[tuple[str, str]]:
    for config_id, item in parser.ref_resolver.items.items():
        if isinstance(item, ConfigExpression) and ConfigExpression.is_expression(item.get_config()):
            yield config_id, item.get_config()[len(ConfigExpression.prefix):]


def imported_names(parser: ConfigParser) -> set[str]:
    """The global names the stack's import statements bind, as MONAI binds them (the first alias only; the full
    dotted name for ``import a.b``)."""
    names = set()
    for _, source in _expressions(parser):
        if ConfigExpression.is_import_statement(ConfigExpression.prefix + source):
            node = next(ast.iter_child_nodes(ast.parse(source)))
            alias = node.names[0]
            names.add(alias.asname or alias.name)
    return names


def _global_names(table: symtable.SymbolTable) -> set[str]:
    names = {s.get_name() for s in table.get_symbols() if s.is_referenced() and s.is_global()}
    for child in table.get_children():
        names |= _global_names(child)
    return names


def free_names(expression: str) -> set[str]:
    """The global names ``expression`` (the text after ``$``, MONAI references allowed) reads; SyntaxError if it
    does not compile."""
    source = ReferenceResolver.id_matcher.sub(LOCAL_REFS, expression)
    compile(source, "<config expression>", "eval")
    return _global_names(symtable.symtable(source, "<config expression>", "eval")) - {LOCAL_REFS}


def expression_problems(parser: ConfigParser) -> list[ExpressionProblem]:
    """Every expression of the parsed stack that does not compile or names a global the stack does not provide."""
    available = imported_names(parser) | set(_default_globals) | set(dir(builtins))
    problems = []
    for config_id, source in _expressions(parser):
        if ConfigExpression.is_import_statement(ConfigExpression.prefix + source):
            continue
        try:
            unknown = sorted(free_names(source) - available)
        except SyntaxError as e:
            problems.append(ExpressionProblem(f"{config_id}: does not compile ({e.msg}) in ${source}"))
            continue
        if unknown:
            problems.append(ExpressionProblem(f"{config_id}: names {unknown}, which this stack never imports, "
                                              f"in ${source}"))
    return problems
