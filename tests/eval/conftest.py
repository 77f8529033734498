"""Makes the helper module ``_eval_layout`` (tiny dataset folders) importable from these tests."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
