"""recdeploy bench: the generated section of a document is replaced, nothing else."""
from recdeploy.perf.bench import BEGIN, END, replace_generated


def test_generated_section_is_replaced_and_the_notebook_kept():
    text = f"# Performance\n\nnotebook\n\n{BEGIN}\nold table\n{END}\n\nafter\n"
    new = replace_generated(text, "new table\n")
    assert new == f"# Performance\n\nnotebook\n\n{BEGIN}\nnew table\n{END}\n\nafter\n"
    assert replace_generated(new, "newer") .count(BEGIN) == 1


def test_a_document_without_markers_gets_the_section_appended():
    assert replace_generated("# Notes\n", "table") == f"# Notes\n\n{BEGIN}\ntable\n{END}\n"
    assert replace_generated("", "table") == f"\n\n{BEGIN}\ntable\n{END}\n"
