#!/usr/bin/env python3
"""Derives a MariaDB variant of Temporal's MySQL 8 visibility schema.

Usage: mariadb-schema.py SRC_VERSIONED_DIR DST_VERSIONED_DIR

SRC is Temporal's own schema/mysql/v8/visibility/versioned directory (from the Go
module); DST receives the same vX.Y directories with manifest.json and SQL files that
temporal-sql-tool can apply with `update-schema -d DST`. Nothing of the schema is kept
by hand: every statement is Temporal's, transformed by the rules below, so a new
Temporal version flows through unchanged where MariaDB can run it.

MariaDB (10.11) cannot parse parts of the MySQL 8 schema:
  * generated columns written with MySQL's JSON operators `->` and `->>`;
  * functional index parts `(expr)`, including multi-valued `CAST(... AS CHAR(255) ARRAY)`.
Rules:
  1. A column defined `GENERATED ALWAYS AS (...)` is dropped (CREATE TABLE and ALTER TABLE
     ADD COLUMN). The values stay in `search_attributes` JSON, which is kept.
  2. An index part `(COALESCE(col, <constant>)) [DESC]` becomes `col [DESC]` (same leading
     column, NULLs sorted by MariaDB's rule instead of the 9999-12-31 sentinel).
  3. An index with any other functional part, or on a dropped column, is dropped; a later
     DROP INDEX of such an index is dropped too.
  4. Everything else (base columns, primary keys, plain indexes, `_version`, the
     custom_search_attributes and chasm_search_attributes tables) is applied as written.
A manifest whose files end up empty keeps its version with "AllowNoCqlFiles": true, so
schema_version and schema_update_history record the same versions as on MySQL 8.

A summary of every change is printed on stdout.
"""

import json
import os
import re
import shutil
import sys

GENERATED = re.compile(r"\bGENERATED\s+ALWAYS\s+AS\b", re.I)
IDENT = r"`?([A-Za-z_][A-Za-z0-9_]*)`?"


def strip_comments(sql):
    # Temporal's files use only `--` line comments, never inside string literals.
    return "\n".join(re.sub(r"--.*$", "", line) for line in sql.splitlines())


def split_top(text, sep):
    """Splits on `sep` outside parentheses and quotes."""
    parts, depth, quote, cur = [], 0, None, []
    for ch in text:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = None
            continue
        if ch in "'\"`":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def outer_parens(text, start):
    """Index of the ')' matching the '(' at text[start]."""
    depth, quote = 0, None
    for i in range(start, len(text)):
        ch = text[i]
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"`":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i
    raise ValueError("unbalanced parentheses in: " + text[:80])


def squash(text):
    return re.sub(r"\s+", " ", text).strip()


class Deriver:
    def __init__(self):
        self.dropped_columns = {}  # table -> set of column names (lower case)
        self.skipped_indexes = set()  # (table, index) lower case
        self.notes = []

    def dropped(self, table, column):
        return column.lower() in self.dropped_columns.get(table.lower(), set())

    def drop_column(self, where, table, column):
        self.dropped_columns.setdefault(table.lower(), set()).add(column.lower())
        self.notes.append(f"{where}: dropped generated column {table}.{column}")

    def statement(self, where, stmt):
        """Returns the MariaDB statement, or None to leave it out."""
        flat = squash(stmt)
        m = re.match(r"CREATE\s+TABLE\s+" + IDENT + r"\s*\(", flat, re.I)
        if m:
            return self.create_table(where, m.group(1), flat, m.end() - 1)
        m = re.match(r"ALTER\s+TABLE\s+" + IDENT + r"\s+(.*)$", flat, re.I | re.S)
        if m:
            return self.alter_table(where, m.group(1), m.group(2))
        m = re.match(r"CREATE\s+((?:UNIQUE|FULLTEXT)\s+)?INDEX\s+" + IDENT + r"\s+ON\s+" + IDENT + r"\s*\(", flat, re.I)
        if m:
            return self.create_index(where, m.group(1) or "", m.group(2), m.group(3), flat, m.end() - 1)
        m = re.match(r"DROP\s+INDEX\s+" + IDENT + r"\s+ON\s+" + IDENT + r"\s*$", flat, re.I)
        if m:
            key = (m.group(2).lower(), m.group(1).lower())
            if key in self.skipped_indexes:
                self.skipped_indexes.discard(key)
                self.notes.append(f"{where}: left out DROP INDEX {m.group(1)} (index was not created)")
                return None
            return stmt.strip()
        return stmt.strip()

    def create_table(self, where, table, flat, open_paren):
        close = outer_parens(flat, open_paren)
        items, kept = split_top(flat[open_paren + 1:close], ","), []
        for item in items:
            col = re.match(IDENT, item)
            if GENERATED.search(item) and col:
                self.drop_column(where, table, col.group(1))
                continue
            kept.append(item)
        body = ",\n  ".join(kept)
        return f"{flat[:open_paren].strip()} (\n  {body}\n){flat[close + 1:]}".rstrip()

    def alter_table(self, where, table, rest):
        clauses, kept = split_top(rest, ","), []
        for clause in clauses:
            add = re.match(r"ADD\s+(?:COLUMN\s+)?" + IDENT + r"\s", clause, re.I)
            if add and GENERATED.search(clause):
                self.drop_column(where, table, add.group(1))
                continue
            drop = re.match(r"DROP\s+(?:COLUMN\s+)?" + IDENT + r"\s*$", clause, re.I)
            if drop and self.dropped(table, drop.group(1)):
                self.notes.append(f"{where}: left out DROP COLUMN {table}.{drop.group(1)} (column was not created)")
                continue
            kept.append(clause)
        if not kept:
            return None
        return f"ALTER TABLE {table}\n  " + ",\n  ".join(kept)

    def create_index(self, where, kind, name, table, flat, open_paren):
        close = outer_parens(flat, open_paren)
        parts, out, reason = split_top(flat[open_paren + 1:close], ","), [], None
        for part in parts:
            if part.startswith("("):
                end = outer_parens(part, 0)
                expr, order = part[1:end].strip(), part[end + 1:].strip()
                co = re.fullmatch(r"COALESCE\s*\(\s*" + IDENT + r"\s*,\s*(CAST\s*\(\s*'[^']*'\s+AS\s+\w+\s*\)|'[^']*')\s*\)", expr, re.I)
                if co and not self.dropped(table, co.group(1)):
                    out.append(f"{co.group(1)} {order}".strip())
                    self.notes.append(f"{where}: index {name}: ({squash(expr)}) -> {co.group(1)}")
                    continue
                reason = f"functional part ({squash(expr)})"
                break
            col = re.match(IDENT, part)
            if col and self.dropped(table, col.group(1)):
                reason = f"column {col.group(1)} was dropped"
                break
            out.append(part)
        if reason:
            self.skipped_indexes.add((table.lower(), name.lower()))
            self.notes.append(f"{where}: dropped index {table}.{name}: {reason}")
            return None
        return f"CREATE {kind}INDEX {name} ON {table} (" + ", ".join(out) + ")" + flat[close + 1:]


def version_key(dirname):
    return tuple(int(x) for x in dirname[1:].split("."))


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: mariadb-schema.py SRC_VERSIONED_DIR DST_VERSIONED_DIR")
    src, dst = sys.argv[1], sys.argv[2]
    dirs = sorted((d for d in os.listdir(src) if re.fullmatch(r"v\d+\.\d+", d)), key=version_key)
    if not dirs:
        sys.exit(f"mariadb-schema.py: no vX.Y directories in {src}")
    tmp = dst + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    deriver = Deriver()
    for d in dirs:  # in version order: later files refer to what earlier ones created
        with open(os.path.join(src, d, "manifest.json")) as f:
            manifest = json.load(f)
        os.makedirs(os.path.join(tmp, d))
        files = []
        for name in manifest.get("SchemaUpdateCqlFiles") or []:
            with open(os.path.join(src, d, name)) as f:
                sql = strip_comments(f.read())
            stmts = []
            for stmt in split_top(sql, ";"):
                out = deriver.statement(f"{d}/{name}", stmt)
                if out:
                    stmts.append(out)
            if stmts:
                with open(os.path.join(tmp, d, name), "w") as f:
                    f.write(f"-- Derived for MariaDB from Temporal's mysql/v8/visibility/versioned/{d}/{name}\n")
                    f.write("-- by vismig tests/services/mariadb-schema.py. Do not edit.\n\n")
                    f.write(";\n\n".join(stmts) + ";\n")
                files.append(name)
            else:
                deriver.notes.append(f"{d}/{name}: nothing left for MariaDB, file left out")
        manifest["SchemaUpdateCqlFiles"] = files
        if not files:
            manifest["AllowNoCqlFiles"] = True
        with open(os.path.join(tmp, d, "manifest.json"), "w") as f:
            json.dump(manifest, f, indent=2)
            f.write("\n")
    shutil.rmtree(dst, ignore_errors=True)
    os.replace(tmp, dst)
    print("\n".join(deriver.notes))


if __name__ == "__main__":
    main()
