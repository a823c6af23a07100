"""The portfolio engine: estimates, convex solves, exact-K selection, figures.

`request` is light (no NumPy) so that job-parameter validation at submit stays cheap; the
other modules import NumPy and the solvers once, when a worker first loads the optimize step.
"""
