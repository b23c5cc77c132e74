"""Evaluate trained models per preprocessing variant: not implemented yet (issue #4).

This entry point deliberately does nothing but say so: it must not pretend to evaluate.
"""

import sys

if __name__ == "__main__":
    print("hsbcala: evaluate.py is not implemented yet (issue #4); use calamari-eval in the engine "
          "environment meanwhile", file=sys.stderr)
    sys.exit(2)
