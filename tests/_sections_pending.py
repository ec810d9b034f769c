"""Public functions documented before ``tests/test_docs.py`` required numpydoc Parameters and
Returns sections: they describe their arguments in prose. The list may only shrink; every
function added since has both sections.
"""

SECTIONS_PENDING = frozenset({
    "routesim.engines._common.closes_after_micro_batch",
    "routesim.engines._common.closes_after_step",
    "routesim.engines._common.initial_bias",
    "routesim.engines._common.make_plan",
    "routesim.engines._common.maxvio_compute",
    "routesim.engines._common.select_points",
    "routesim.engines._common.update_controller",
    "routesim.engines.exact.init_state",
    "routesim.engines.exact.make_plan_exact",
    "routesim.engines.exact.step_state",
    "routesim.engines.learner.init_state",
    "routesim.engines.learner.make_plan_learner",
    "routesim.engines.learner.step_state",
    "routesim.engines.learner_penalty.penalty_terms",
    "routesim.engines.learner_penalty.per_point",
    "routesim.engines.learner_penalty.schedule_weight",
    "routesim.engines.meanfield.make_plan_meanfield",
    "routesim.engines.meanfield.round_to_total",
    "routesim.engines.meanfield_reference.blank_reference",
    "routesim.engines.meanfield_reference.current_p",
    "routesim.engines.meanfield_reference.evaluate",
    "routesim.engines.meanfield_reference.relative_change",
})
