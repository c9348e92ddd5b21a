"""`shipyard bake`: many targets from a build file, lowered into one graph and solved in one run.

graph     — the target dependency graph (closure, order, cycles, dependents)
keys      — target keys: what a target's result depends on, checkable without lowering
records   — what the last build of each target left behind, and whether it still exists
planner   — per target: skip, or lower and build (and why)
explain   — per target and per step: HIT/MISS and the first input that differs
executor  — one solve for every target that builds, then per-target exports
"""
