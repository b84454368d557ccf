"""`python -m maskrcnn_deploy.runtime.cli`: the same `main()` the `maskrcnn-deploy` script runs, and its exit code."""

import sys

from maskrcnn_deploy.runtime.cli import main

if __name__ == "__main__":
    sys.exit(main())
