"""The pytest plugin runs the reference suite against a user's law, and catches a broken one."""

import textwrap

import pytest

pytest_plugins = ["pytester"]

LAWS = textwrap.dedent('''
    from routesim import controllers


    def halved_sign(xp, bias, load, memory, params):
        """Loss-Free's sign law at half the rate: stable."""
        load = xp.astype(load, bias.dtype)
        mean = xp.mean(load, axis=-1, keepdims=True)
        return bias + 0.5 * params["bias_update_rate"] * xp.sign(mean - load), memory


    def flipped_sign(xp, bias, load, memory, params):
        """The sign law with its sign flipped: it feeds the busiest expert."""
        load = xp.astype(load, bias.dtype)
        mean = xp.mean(load, axis=-1, keepdims=True)
        return bias - params["bias_update_rate"] * xp.sign(mean - load), memory


    for name, law in (("halved_sign", halved_sign), ("flipped_sign", flipped_sign)):
        if name not in controllers.registered():
            controllers.register(name, law, fields=("bias_update_rate",))
''')


@pytest.fixture
def laws_module(pytester):
    pytester.makepyfile(my_laws=LAWS)
    pytester.syspathinsert()
    return "my_laws"


@pytest.fixture(autouse=True)
def _plugin_named_explicitly(monkeypatch):
    # installed plugins load once per process; name ours on each inner run instead
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")


def run_reference(pytester, *args):
    return pytester.runpytest_inprocess("-p", "routesim.testing.plugin", "--pyargs",
                                        "routesim.testing.reference", "-q", *args)


def test_a_sound_law_passes_the_reference_suite(pytester, laws_module):
    result = run_reference(pytester, "--routesim-module", laws_module,
                           "--routesim-law", "halved_sign", "--routesim-rate", "0.04")
    result.assert_outcomes(passed=2)


def test_a_flipped_law_fails_the_reference_suite(pytester, laws_module):
    result = run_reference(pytester, "--routesim-module", laws_module,
                           "--routesim-law", "flipped_sign", "--routesim-rate", "0.04")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*test_loop_settles_after_any_perturbation*",
                                 "*law 'flipped_sign'*is not below*"])


def test_an_unknown_law_is_refused_naming_the_registered_ones(pytester):
    result = run_reference(pytester, "--routesim-law", "no_such_law")
    result.stdout.fnmatch_lines(["*--routesim-law = 'no_such_law': not a registered law*"])
    assert result.ret != 0
