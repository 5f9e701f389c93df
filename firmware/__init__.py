"""C/C++ sources of the on-device side, shipped as package data (not Python code)."""
