import sys

from edufilter.cli import main

sys.exit(main())
