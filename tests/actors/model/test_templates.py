"""Templates: rendering, listing references, and checking them at registration."""

import pytest

from actors.model.templates import CI_KEYS, TemplateError, check, references, render

CONTEXT = {
    "ci": {"pipeline_id": "app", "build_id": "b-7", "build_num": "7"},
    "variables": {"DEPLOY_ENV": "test", "REGION": "eu"},
}


def test_render_replaces_every_reference() -> None:
    text = "${{ ci.pipeline_id }}/${{ci.build_num}}-${{  variables.DEPLOY_ENV  }}"
    assert render(text, CONTEXT) == "app/7-test"


def test_render_without_template_returns_the_same_string() -> None:
    text = "plain text with ${ shell } and {{ braces }}"
    assert render(text, CONTEXT) is text


def test_render_converts_non_string_values() -> None:
    context = {"ci": {"build_num": 7}}
    assert render("#${{ ci.build_num }}", context) == "#7"  # type: ignore[arg-type]


def test_render_unknown_reference_names_it() -> None:
    with pytest.raises(TemplateError, match=r"variables\.MISSING"):
        render("x-${{ variables.MISSING }}", CONTEXT)


def test_render_unknown_namespace_names_it() -> None:
    with pytest.raises(TemplateError, match="'env'"):
        render("${{ env.HOME }}", CONTEXT)


def test_render_refuses_malformed_and_unclosed_expressions() -> None:
    with pytest.raises(TemplateError, match="malformed"):
        render("${{ DEPLOY_ENV }}", CONTEXT)
    with pytest.raises(TemplateError, match="not closed"):
        render("${{ ci.build_id }} and ${{ ci.build_id", CONTEXT)


def test_template_error_is_a_value_error() -> None:
    assert issubclass(TemplateError, ValueError)


def test_a_rendered_value_is_not_rendered_again() -> None:
    context = {"variables": {"A": "${{ variables.B }}"}}
    assert render("${{ variables.A }}", context) == "${{ variables.B }}"


def test_references_lists_well_formed_references_in_order() -> None:
    text = "${{ variables.A }} ${{ ci.build_id }} ${{ nonsense }} ${{variables.A}}"
    assert references(text) == [("variables", "A"), ("ci", "build_id"), ("variables", "A")]
    assert references("no templates") == []


def test_check_accepts_valid_templates() -> None:
    assert check("deploy-${{ variables.DEPLOY_ENV }}-${{ ci.build_num }}", {"DEPLOY_ENV"}) == []
    assert check("nothing to see", set()) == []
    for key in CI_KEYS:
        assert check(f"${{{{ ci.{key} }}}}", ()) == []


def test_check_undeclared_variable_suggests_the_nearest() -> None:
    (problem,) = check("${{ variables.DEPLOY_EN }}", ["DEPLOY_ENV", "REGION"])
    assert "undeclared variable 'DEPLOY_EN'" in problem
    assert "did you mean 'DEPLOY_ENV'?" in problem


def test_check_undeclared_variable_without_a_close_name_says_to_declare_it() -> None:
    (problem,) = check("${{ variables.X }}", [])
    assert "undeclared variable 'X'" in problem
    assert "declare it under 'variables'" in problem


def test_check_unknown_ci_key_suggests_the_nearest() -> None:
    (problem,) = check("${{ ci.build_number }}", [])
    assert "ci.build_number" in problem
    assert "did you mean 'build_num'?" in problem


def test_check_unknown_namespace_suggests_the_nearest() -> None:
    (problem,) = check("${{ variable.X }}", ["X"])
    assert "unknown namespace 'variable'" in problem
    assert "did you mean 'variables'?" in problem


def test_check_malformed_and_unclosed() -> None:
    problems = check("${{ X }} then ${{ ci.build_id", ["X"])
    assert len(problems) == 2
    assert "malformed expression '${{ X }}'" in problems[0]
    assert "'${{' at offset 14 is not closed by '}}'" in problems[1]


def test_check_reports_every_problem_of_a_template() -> None:
    problems = check("${{ ci.nope }}-${{ variables.NOPE }}-${{ foo.bar }}", [])
    assert len(problems) == 3


def test_check_expression_is_on_one_line() -> None:
    problems = check("${{ ci.build_id\n}}", [])
    assert problems and "not closed" in problems[0]
