"""launcher: compose -> validate -> plan -> execute/submit -> worker -> run dir."""
from pathlib import Path

#: The checkout this package runs from (conf/, recipes/, data/, assets/ live here).
PROJECT_ROOT = Path(__file__).resolve().parent.parent
