"""Collision search: the methods, their shared result type, and the closed forms.

    options.py      the registry METHODS and the options of every method (imports no torch)
    base.py         Collisions (the per-pair result), the feature-map type, the tolerances
    jacobian.py     method `jacobian`: paper 001, Algorithm 1, with two step controls (the paper's
                    decaying schedule, and a line search on an exact-penalty merit function) and
                    an optional box that every iterate stays in
    closed_form.py  exact distances of the input space and of affine taps (paper 002, Section 3.1);
                    shards use them where they apply, whatever the configured method

Adding a method is one module with a `run` function, its options dataclass and one METHODS entry.
"""

from .options import METHODS, CollisionOptions, Method, SearchOptions

__all__ = ["METHODS", "CollisionOptions", "Method", "SearchOptions"]
