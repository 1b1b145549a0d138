"""Adapters with side effects: the only place netemu touches the kernel.

Each adapter is a small interface with a real implementation and a fake
that behaves like the kernel (validates, applies atomically, records the
last transaction), so unit tests run without root.
"""
