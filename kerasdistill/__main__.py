import sys

from kerasdistill.cli import main

sys.exit(main())
