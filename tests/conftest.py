"""Shared pytest setup: makes ``tests/_support.py`` importable as ``_support``."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
