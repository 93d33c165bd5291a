"""The documentation: the configuration page names every top-level key of the schema, and the
README stays a front page (its links reach pages that exist)."""

import re

from layerbound import config
from workflow_helpers import ROOT


def test_the_configuration_page_names_every_top_level_key_of_the_schema():
    text = (ROOT / "docs" / "configuration.md").read_text()
    missing = [key for key in config.schema()["properties"] if f"`{key}" not in text]
    assert not missing, f"docs/configuration.md does not mention {missing}"


def test_the_configuration_reference_is_generated_from_the_schema():
    from layerbound.config import reference

    page = (ROOT / "docs" / "config_reference.md").read_text()
    assert page == reference.markdown(), ("docs/config_reference.md is stale: "
                                          "python -m layerbound.config.reference > docs/config_reference.md")
    keys = [row[0] for row in reference.rows()]
    assert "`collision.search.max_iter`" in keys and "`models.<name>.arch` (trained)" in keys


def test_the_readme_is_short_and_its_links_reach_files():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    assert links and all((ROOT / link).is_file() for link in links), [l for l in links if not (ROOT / l).is_file()]


def test_every_page_is_in_the_sites_navigation():
    import yaml

    def pages(node):
        if isinstance(node, str):
            yield node
        elif isinstance(node, list):
            for item in node:
                yield from pages(item)
        elif isinstance(node, dict):
            for value in node.values():
                yield from pages(value)

    site = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert sorted(pages(site["nav"])) == sorted(p.name for p in (ROOT / "docs").glob("*.md"))
