"""The quantum layer: BB84 circuits, link and attack models, backends, execution.

This is the only part of qkd_circuits that imports qiskit.
"""
