"""Tests of bot.core, stepping the Tracker by hand (see conftest.py)."""
