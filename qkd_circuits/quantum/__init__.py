"""The quantum layer: BB84 circuits, link and attack models, backends, execution.

This is the only part of qkd_circuits that imports qiskit.
"""

# The names live in the modules (circuits, backends, execution, models, wcp), so that importing
# this package loads no qiskit; the top-level package re-exports the public ones lazily.
__all__: list[str] = []
