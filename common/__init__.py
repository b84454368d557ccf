"""The few things every layer needs and none owns: atomic files and journals, progress, interrupts, error types.

The lowest layer (docs/architecture.md): it imports nothing from the project and nothing heavier than numpy.
"""
