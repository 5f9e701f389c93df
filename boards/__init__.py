"""Board records (one JSON per board) and the local PlatformIO platform for emulated boards, shipped as package data."""
