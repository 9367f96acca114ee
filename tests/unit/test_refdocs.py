"""The reference docs are made from the code: the committed files must be what the code makes now."""

from __future__ import annotations

import pytest

from synth import refdocs
from synth.spec import JobSpec, OutputSpec


@pytest.mark.parametrize("rel", sorted(refdocs.DOCS, key=str), ids=str)
def test_committed_docs_are_current(rel):
    committed = (refdocs.ROOT / rel).read_text(encoding="utf-8") if (refdocs.ROOT / rel).is_file() else ""
    if committed != refdocs.DOCS[rel]():
        pytest.fail(f"{rel} is stale: run `{refdocs.REGENERATE}` and commit the result", pytrace=False)


def test_job_file_doc_lists_every_field():
    doc = refdocs.job_file_markdown()
    for model in (JobSpec, OutputSpec):
        for name, field in model.model_fields.items():
            assert f"| `{field.alias or name}` |" in doc, name
    for kind in refdocs.BUILTIN_GENERATORS:
        assert f"### generator: {kind}" in doc
    assert "| `schema` | string \\| dict[string, any] | required |" in doc  # the alias, its type and required


def test_cli_doc_lists_every_command():
    doc = refdocs.cli_markdown()
    for command in ("run", "submit", "init", "index", "inspect", "export", "spec check", "cache clear", "sim serve"):
        assert f"## synth {command}\n" in doc
    assert "| `--force` | flag |" in doc and "| `--sample` | option: int >= 1 | `20` |" in doc


def test_stale_names_a_changed_file(tmp_path):
    refdocs.write(tmp_path)
    assert refdocs.stale(tmp_path) == []
    (tmp_path / refdocs.CLI_DOC).write_text("old\n")
    assert refdocs.stale(tmp_path) == [refdocs.CLI_DOC]
