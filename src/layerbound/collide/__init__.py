"""Collision search: the methods, their shared result type, the closed forms, and the shard jobs.

    options.py      the registry METHODS and the options of every method (imports no torch)
    base.py         Collisions (the per-pair result), the feature-map type, the tolerances
    jacobian.py     method `jacobian`: paper 001, Algorithm 1 (`search`), with two step controls:
                    the paper's decaying schedule (`decay_search`) and merit.py's line search on an
                    exact-penalty merit function; an optional box that every iterate stays in
    merit.py        the merit step control
    linear_step.py  what both share: Jacobian rows, the least-norm projection onto the linearized
                    collision set (in the box), the best collisions kept
    polytope.py     method `polytope`: paper 002's descent over activation polytopes
    closed_form.py  exact distances of the input space and of affine taps (paper 002, Section 3.1);
                    shards use them where they apply, whatever the configured method
    certify.py      the float64 certificate every returned collision passes
    features.py     f_j, the map the search differentiates; projection.py: seeded random projections
    units.py        a merged distance file's Unit and its Shards; shards.py: one shard run, read, merged

Adding a method is one module with a `run` function, its options dataclass and one METHODS entry.
"""

from .options import METHODS, CollisionOptions, Method, SearchOptions

__all__ = ["METHODS", "CollisionOptions", "Method", "SearchOptions"]
